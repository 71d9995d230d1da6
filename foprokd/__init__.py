"""FoPro-KD engine: distil a frozen teacher into a small student on long-tailed image data.

Pure PyTorch + timm; imports nothing from ``app`` or ``workers``. Modules: ``data`` (images as
uint8 tensors), ``zoo`` (teachers, students, weights), ``student``, ``fourier`` (the Fourier
Prompt Generator), ``losses``, ``trainer``, ``checkpoint``, ``metrics``, ``export``, ``cli``.
Importing the package itself is cheap: submodules load torch only when imported.
"""
