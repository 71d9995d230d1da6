// Dataset pages: the upload form sends the archive with XMLHttpRequest to show its progress,
// and a dataset's page draws its class counts per split on a log scale.
"use strict";

(() => {
  const form = document.getElementById("upload-form");
  if (form) {
    const bar = document.getElementById("upload-progress");
    const message = document.getElementById("upload-message");
    const button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      // Fields first and the file last (the server streams the file and needs the fields
      // before it); empty optional fields are left out so their defaults apply.
      const body = new FormData();
      for (const [name, value] of new FormData(form)) {
        if (typeof value === "string" && value.trim() === "") continue;
        body.append(name, value);
      }
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", (progress) => {
        if (progress.lengthComputable) bar.value = (100 * progress.loaded) / progress.total;
      });
      request.upload.addEventListener("load", () => {
        bar.value = 100;
        message.textContent = "Uploaded; storing…";
      });
      request.addEventListener("load", () => {
        let reply = null;
        try { reply = JSON.parse(request.responseText); } catch { reply = null; }
        if (request.status === 202 && reply) {
          message.textContent = "Stored; opening the dataset…";
          window.location.assign(`/datasets/${reply.id}`);
          return;
        }
        button.disabled = false;
        message.textContent = reply && reply.error ? reply.error.message : `Upload failed (HTTP ${request.status}).`;
        message.className = "error";
      });
      request.addEventListener("error", () => {
        button.disabled = false;
        message.textContent = "The upload was interrupted (network error); try again.";
        message.className = "error";
      });
      bar.hidden = false;
      bar.value = 0;
      button.disabled = true;
      message.className = "";
      message.textContent = "Uploading…";
      request.send(body);
    });
  }

  const data = document.getElementById("dataset-chart");
  const canvas = document.getElementById("class-counts-chart");
  if (data && canvas) {
    const chart = JSON.parse(data.textContent);
    const colours = { train: "#1d4ed8", val: "#b45309", test: "#047857" };
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: chart.classes,
        datasets: Object.entries(chart.counts).map(([split, counts]) => ({
          label: split,
          data: chart.classes.map((name) => counts[name] || 0),
          backgroundColor: colours[split] || "#6b7280",
        })),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          y: { type: "logarithmic", min: 0.8, title: { display: true, text: "images (log scale)" } },
          x: { title: { display: true, text: "class" } },
        },
      },
    });
  }
})();
