// The job page: live progress and events over the job's SSE stream, per-epoch curves redrawn
// after every epoch, and a reload when the job ends so the report and buttons appear.
"use strict";

(() => {
  const live = JSON.parse(document.getElementById("job-live").textContent);
  const field = (name) => document.querySelector(`[data-live="${name}"]`);
  const ACTIVE = new Set(["queued", "running"]);
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    const total = Math.max(0, Math.round(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = total % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (hours) return `${hours} h ${pad(minutes)} m`;
    if (minutes) return `${minutes} m ${pad(secs)} s`;
    return `${secs} s`;
  }

  // Mirrors app.dashboard.views.progress_view, which renders the page before the stream opens.
  function showProgress(update) {
    const progress = update.progress || {};
    const training = "total_steps" in progress;
    const active = ACTIVE.has(update.status);
    let percent = training ? Number(progress.percent || 0) : 0;
    if (update.status === "succeeded") percent = 100;
    percent = Math.min(Math.max(percent, 0), 100);
    document.getElementById("job-progress").value = percent;
    field("percent").textContent = `${percent.toFixed(1)} %`;
    let phase = update.phase || (update.status === "queued" ? "waiting for a worker" : "–");
    if (TERMINAL.has(update.status)) {
      phase = `ended: ${update.status}`;
    } else if (update.phase === "preparing" && "stage" in progress) {
      phase = `preparing (${progress.stage} ${progress.done || 0}/${progress.total})`;
    }
    field("phase").textContent = phase;
    field("epoch").textContent = training ? `${progress.epoch} / ${progress.epochs}` : "–";
    field("step").textContent = training ? `${progress.step} / ${progress.steps_per_epoch}` : "–";
    field("images_per_s").textContent = training && active ? String(progress.images_per_s) : "–";
    field("eta").textContent = training && active ? duration(progress.eta_s) : "–";
    field("cancel").hidden = !(update.cancel_requested && update.status === "running");
    const badge = document.getElementById("job-status");
    badge.textContent = update.status;
    badge.className = `badge status-${update.status}`;
  }

  function appendEvent(event) {
    const list = document.getElementById("events");
    if (list.querySelector(`[data-event-id="${event.id}"]`)) return;
    const item = document.createElement("li");
    item.dataset.eventId = event.id;
    const time = document.createElement("time");
    time.textContent = new Date(event.created_at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const kind = document.createElement("span");
    kind.className = `badge kind-${event.kind}`;
    kind.textContent = event.kind;
    item.append(time, " ", kind, " ", event.message);
    list.append(item);
  }

  const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490"];
  const charts = {};

  function lineChart(id, datasets, epochs, yOptions) {
    const canvas = document.getElementById(id);
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(canvas, {
      type: "line",
      data: {
        labels: epochs,
        datasets: datasets.map((set, i) => ({
          ...set, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
          pointRadius: 2, borderWidth: 2, tension: 0,
        })),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { title: { display: true, text: "epoch" } }, y: yOptions },
      },
    });
  }

  function drawCurves(metrics) {
    const points = metrics.epochs || [];
    document.getElementById("curves-empty").hidden = points.length > 0;
    if (!points.length) return;
    const epochs = points.map((p) => p.epoch);
    const lossNames = [...new Set(points.flatMap((p) => Object.keys(p.train_losses)))];
    lineChart(
      "loss-chart",
      [
        ...lossNames.map((name) => ({ label: `train ${name}`, data: points.map((p) => p.train_losses[name] ?? null) })),
        { label: "val loss", data: points.map((p) => p.val_loss), borderDash: [6, 3] },
      ],
      epochs,
      { title: { display: true, text: "loss" } },
    );
    lineChart(
      "accuracy-chart",
      [
        { label: "val balanced accuracy", data: points.map((p) => p.val_balanced_accuracy) },
        { label: "val macro-F1", data: points.map((p) => p.val_macro_f1), borderDash: [6, 3] },
      ],
      epochs,
      { min: 0, max: 1, title: { display: true, text: "score" } },
    );
  }

  async function refreshCurves() {
    const response = await fetch(`/jobs/${live.job_id}/metrics`, { headers: { Accept: "application/json" } });
    if (response.ok) drawCurves(await response.json());
  }

  drawCurves(live.metrics);

  const source = new EventSource(`/jobs/${live.job_id}/stream?after_id=${live.last_event_id}`);
  source.addEventListener("progress", (message) => showProgress(JSON.parse(message.data)));
  source.addEventListener("job_event", (message) => {
    const event = JSON.parse(message.data);
    appendEvent(event);
    if (event.kind === "epoch") refreshCurves();
  });
  source.addEventListener("end", (message) => {
    source.close();
    const end = JSON.parse(message.data);
    // The report, artifacts and buttons of a finished job are rendered by the server.
    if (end.status !== live.status) window.location.reload();
  });
  window.addEventListener("pagehide", () => source.close());
})();
