// The demo page: drop an image, POST it to /v1/predict, draw the top-k probabilities.
"use strict";

const $ = (id) => document.getElementById(id);
let lastFile = null;

function headers() {
  const key = $("apikey").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function loadModelInfo() {
  try {
    const res = await fetch("/v1/model", { headers: headers() });
    const info = await res.json();
    if (!res.ok) throw new Error(info.error || res.statusText);
    const arch = info.metadata.model_name || "model";
    $("model-line").textContent =
      `${arch} · ${info.classes.length} classes · built-in prior: ${info.prior.mode} · version ${info.version}`;
  } catch (err) {
    $("model-line").textContent = `Model information unavailable (${err.message})`;
  }
}

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function drawBars(result) {
  const list = $("bars");
  list.replaceChildren();
  for (const item of result.predictions[0].top_k) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = item.label;
    label.title = `class ${item.index}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(item.probability * 100).toFixed(1)}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(item.probability * 100).toFixed(1)}%`;
    li.append(label, bar, pct);
    list.append(li);
  }
  const t = result.timing;
  showStatus(`prior: ${result.prior} · ${t.total_ms.toFixed(1)} ms (model ${t.inference_ms.toFixed(1)} ms)`);
}

async function predict(file) {
  lastFile = file;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  showStatus("Classifying…");
  const form = new FormData();
  form.append("files", file, file.name);
  form.append("top_k", $("topk").value);
  form.append("prior", $("prior").value);
  try {
    const res = await fetch("/v1/predict", { method: "POST", body: form, headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    drawBars(body);
  } catch (err) {
    $("bars").replaceChildren();
    showStatus(err.message, true);
  }
}

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => { if (e.target.files.length) predict(e.target.files[0]); });
for (const id of ["prior", "topk"]) $(id).addEventListener("change", () => { if (lastFile) predict(lastFile); });
$("apikey").addEventListener("change", loadModelInfo);
loadModelInfo();
