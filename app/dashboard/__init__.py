"""Server-rendered pages for people: jobs (live progress, curves, test report), datasets
(upload, class counts), teachers. Jinja templates plus a little script (htmx, Chart.js), no
build step; authenticated by a signed session cookie opened with an API key."""
