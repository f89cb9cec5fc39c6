// The demo page: images in (drop, choose, paste), one POST /v1/predict for them, a card per image;
// the prior to predict under, and the server's estimate of the traffic's prior (GET /v1/prior).
// Plain script, no build step, nothing inline: the page runs under a strict CSP (livt/serving/security.py).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_CARDS = 48; // older cards go, so re-classifying under a new prior stays one small request
const ESTIMATE_POLL_MS = 5000;
// The server prefixes a per-image error with the image's position in the request ("image 2: ...").
const IMAGE_ERROR = /^image (\d+): ([\s\S]*)$/;

const state = {
  classes: [],
  trainCounts: [], // training images per class, for the custom prior's "train" fill
  estimate: null, // the last /v1/prior estimate, for the "estimate" fill
  builtInPrior: "",
  entries: [], // {file, name, url, card}, newest first
  run: 0, // a newer classification supersedes one still in flight
  batchLimit: Infinity, // learnt from a 413: the server's most images (or pixels) per request
  estimateTimer: null,
  estimateShown: false,
  pasted: 0,
};

const HINTS = {
  model: () => `“model default” is the artifact's own${state.builtInPrior ? ` (${state.builtInPrior})` : ""}.`,
  balanced: () => "“balanced”: every class equally likely.",
  train: () => "“train”: the training set's class frequencies (long-tailed).",
  estimated: () => "“estimated”: the distribution estimated from the images this server has seen (below).",
  custom: () => "“custom”: your own share per class.",
};

function headers() {
  const key = $("apikey").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function getJSON(url, options = {}) {
  const res = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = await res.json().catch(() => ({}));
  return { res, body, message: body.error || `${res.status} ${res.statusText}` };
}

// Shown to one decimal; what would round to 0.0 % (or 100.0 % short of certainty) says so instead.
function percent(p) {
  if (p < 0.0005) return "<0.1 %";
  if (p >= 0.9995 && p < 1) return ">99.9 %";
  return `${(p * 100).toFixed(1)} %`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// --- the model ------------------------------------------------------------------------------------

async function loadModelInfo() {
  try {
    const { res, body, message } = await getJSON("/v1/model");
    if (res.status === 401) throw new Error("the server needs an API key: enter it above");
    if (!res.ok) throw new Error(message);
    const meta = body.metadata || {};
    state.classes = body.classes;
    state.builtInPrior = body.prior.mode || "";
    state.trainCounts = meta.class_counts || []; // "train" fill: the counts, which the server normalises
    $("model-line").textContent =
      `${meta.model_name || "model"} · ${body.classes.length} classes · built-in prior: ${state.builtInPrior} · version ${body.version}`;
    // Without balanced logits (trained with tau 0) no prior can move the outputs; the server says which.
    const balanced = body.balanced_logits;
    for (const value of [...body.priors, "custom"]) {
      if (value !== "model" && value !== "estimated") offerPrior(value, balanced);
    }
    if (!balanced) offerPrior("estimated", false);
    $("prior").dataset.noBalanced = balanced ? "" : "yes";
    buildCustomInputs();
  } catch (err) {
    $("model-line").textContent = `Model information unavailable: ${err.message}`;
  }
  showPriorHint();
}

function offerPrior(value, offered) {
  const option = $("prior").querySelector(`option[value="${value}"]`);
  option.hidden = !offered;
  option.disabled = !offered;
  if (!offered && $("prior").value === value) {
    $("prior").value = "model";
    priorChanged();
  }
}

function showPriorHint() {
  const noBalanced = $("prior").dataset.noBalanced === "yes";
  $("prior-hint").textContent = noBalanced
    ? "This model was trained without a balanced loss: it predicts under its training distribution, and no other prior applies."
    : HINTS[$("prior").value]();
}

// --- the prior of a request ---------------------------------------------------------------------

function buildCustomInputs() {
  const box = $("custom-inputs");
  if (box.childElementCount === state.classes.length) return;
  box.replaceChildren(
    ...state.classes.map((name, i) =>
      el(
        "label",
        { className: "share" },
        el("span", { textContent: name, title: `class ${i}` }),
        el("input", { type: "number", min: "0", step: "any", value: "1", inputMode: "decimal", id: `custom-${i}` }),
      ),
    ),
  );
  // Applied by the button or Enter, not on every change: typing ten shares is not ten requests.
  for (const input of box.querySelectorAll("input")) {
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") reclassify();
    });
  }
}

function fillCustom(values) {
  if (!values || values.length !== state.classes.length) return;
  // Counts stay exact; fractions get four significant digits, enough for a share, short to read.
  $("custom-inputs").querySelectorAll("input").forEach((input, i) => {
    const v = values[i];
    input.value = String(Number.isInteger(v) ? v : Number(v.toPrecision(4)));
  });
  reclassify();
}

// The prior form field: a name, or the custom shares as a JSON list; null (and a message) if invalid.
function priorField() {
  const choice = $("prior").value;
  $("custom-error").textContent = "";
  if (choice !== "custom") return choice;
  const inputs = [...$("custom-inputs").querySelectorAll("input")];
  const values = [];
  for (const [i, input] of inputs.entries()) {
    const text = input.value.trim();
    const value = Number(text);
    if (text === "" || !Number.isFinite(value) || value < 0) {
      $("custom-error").textContent = `${state.classes[i]}: enter a number of 0 or more.`;
      return null;
    }
    values.push(value);
  }
  if (!values.some((v) => v > 0)) {
    $("custom-error").textContent = "At least one class needs a share above 0.";
    return null;
  }
  return JSON.stringify(values);
}

function priorChanged() {
  $("custom").hidden = $("prior").value !== "custom";
  showPriorHint();
  reclassify();
}

// --- images and their cards ---------------------------------------------------------------------

function addFiles(files, named = (f) => f.name) {
  const added = [...files].map((file) => {
    const entry = { file, name: named(file) || "image", url: URL.createObjectURL(file) };
    entry.card = makeCard(entry);
    return entry;
  });
  if (!added.length) return;
  // The newest images first, each drop or choice in its own order.
  state.entries = [...added, ...state.entries];
  for (const old of state.entries.splice(MAX_CARDS)) {
    URL.revokeObjectURL(old.url);
    old.card.remove();
  }
  $("cards").prepend(...added.map((e) => e.card));
  $("clear").hidden = false;
  classify(added);
}

function makeCard(entry) {
  const img = el("img", { src: entry.url, alt: "" });
  // Small images (28 x 28 Fashion-MNIST) are enlarged with their pixels kept sharp.
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 128));
  const thumb = el("button", { type: "button", className: "thumb", title: "Enlarge" }, img);
  thumb.setAttribute("aria-label", `Enlarge ${entry.name}`);
  thumb.addEventListener("click", () => openViewer(entry));
  // A file the browser cannot show (not an image, or a format it lacks, such as TIFF): no preview.
  img.addEventListener("error", () => {
    thumb.disabled = true;
    thumb.title = "";
    thumb.replaceChildren(el("span", { className: "no-preview", textContent: "no preview" }));
  });
  const body = el(
    "div",
    { className: "card-body" },
    el("h3", { className: "name", textContent: entry.name, title: entry.name }),
    el("p", { className: "card-status", textContent: "Classifying…" }),
    el("ol", { className: "bars" }),
  );
  return el("li", { className: "card" }, thumb, body);
}

function cardParts(entry) {
  const card = entry.card;
  return { status: card.querySelector(".card-status"), bars: card.querySelector(".bars") };
}

function showPending(entry) {
  const { status } = cardParts(entry);
  entry.card.classList.remove("failed");
  status.textContent = "Classifying…";
  status.removeAttribute("role");
}

function showScores(entry, prediction) {
  const { status, bars } = cardParts(entry);
  entry.card.classList.remove("failed");
  status.textContent = "";
  bars.replaceChildren(
    ...prediction.top_k.map((item) => {
      const fill = el("span");
      // CSSOM, not a style attribute: allowed under style-src 'self'.
      fill.style.width = `${item.probability * 100}%`;
      const bar = el("div", { className: "bar" }, fill);
      bar.setAttribute("aria-hidden", "true");
      return el(
        "li",
        {},
        el("span", { className: "label", textContent: item.label, title: `class ${item.index}` }),
        bar,
        el("span", { className: "pct", textContent: percent(item.probability) }),
      );
    }),
  );
}

function showError(entry, message) {
  const { status, bars } = cardParts(entry);
  entry.card.classList.add("failed");
  bars.replaceChildren();
  status.textContent = message;
  status.setAttribute("role", "alert");
}

function showStatus(text, note = "", isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  $("prior-note").textContent = note;
  $("prior-note").hidden = !note;
}

function reclassify() {
  if (state.entries.length) classify(state.entries);
}

// One multipart request for the images (split only when the server says it is over a limit). The
// server refuses the whole request for one bad image and names it by position: that card gets the
// message under its file name, and the rest are sent again without it.
async function classify(entries) {
  const prior = priorField();
  if (prior === null) return;
  const run = ++state.run;
  entries.forEach(showPending);
  showStatus(`Classifying ${entries.length} image${entries.length === 1 ? "" : "s"}…`);
  // Images the server has counted in its prior estimate go in requests of their own, sent with
  // observe=false: re-classifying under another prior must not count them again.
  let pending = [...entries.filter((e) => !e.counted), ...entries.filter((e) => e.counted)];
  let last = null;
  let failures = 0;
  while (pending.length) {
    const counted = Boolean(pending[0].counted);
    const end = pending.findIndex((e, i) => i >= state.batchLimit || Boolean(e.counted) !== counted);
    const chunk = pending.slice(0, end < 0 ? pending.length : end);
    const form = new FormData();
    for (const entry of chunk) form.append("files", entry.file, entry.name);
    form.append("top_k", $("topk").value);
    form.append("prior", prior);
    form.append("observe", String(!counted));
    let reply;
    try {
      reply = await getJSON("/v1/predict", { method: "POST", body: form });
    } catch (err) {
      if (run !== state.run) return;
      pending.forEach((e) => showError(e, `The server could not be reached (${err.message}).`));
      showStatus("The server could not be reached.", "", true);
      return;
    }
    if (reply.res.ok) chunk.forEach((e) => (e.counted = true)); // counted even if superseded
    if (run !== state.run) return; // the prior or the images changed meanwhile
    const { res, body, message } = reply;
    if (res.ok) {
      chunk.forEach((entry, i) => showScores(entry, body.predictions[i]));
      pending = pending.slice(chunk.length);
      last = body;
      continue;
    }
    const perImage = IMAGE_ERROR.exec(message);
    if (perImage && Number(perImage[1]) < chunk.length) {
      const bad = chunk[Number(perImage[1])];
      showError(bad, `${bad.name}: ${perImage[2]}`);
      pending = pending.filter((e) => e !== bad);
      failures += 1;
      continue;
    }
    if (res.status === 413 && chunk.length > 1) {
      state.batchLimit = Math.ceil(chunk.length / 2);
      continue;
    }
    // A fault of the whole request (prior, key, server): every card still waiting says it.
    pending.forEach((e) => showError(e, message));
    showStatus(message, "", true);
    return;
  }
  const done = entries.length - failures;
  const parts = [`${done} of ${entries.length} image${entries.length === 1 ? "" : "s"} classified`];
  if (last) parts.push(`prior: ${last.prior}`, `${last.timing.total_ms.toFixed(1)} ms`);
  showStatus(parts.join(" · "), last && last.prior_note ? `Note: ${last.prior_note}` : "", failures > 0 && !done);
}

function clearCards() {
  state.run += 1;
  for (const entry of state.entries) URL.revokeObjectURL(entry.url);
  state.entries = [];
  $("cards").replaceChildren();
  $("clear").hidden = true;
  showStatus("");
}

function openViewer(entry) {
  const top = entry.card.querySelector(".bars li");
  const best = top ? ` — ${top.querySelector(".label").textContent} ${top.querySelector(".pct").textContent}` : "";
  $("viewer-title").textContent = `${entry.name}${best}`;
  const img = $("viewer-img");
  img.src = entry.url;
  img.alt = entry.name;
  img.classList.toggle("small", entry.card.querySelector("img").classList.contains("small"));
  $("viewer").showModal();
}

// --- the estimated prior ------------------------------------------------------------------------

async function loadEstimate() {
  clearTimeout(state.estimateTimer);
  let reply;
  try {
    reply = await getJSON("/v1/prior");
  } catch (err) {
    $("estimate-status").textContent = `The server could not be reached (${err.message}).`;
    state.estimateTimer = setTimeout(loadEstimate, ESTIMATE_POLL_MS);
    return;
  }
  const { res, body, message } = reply;
  const table = $("estimate-table");
  if (res.status === 409) {
    // The model has no balanced logits, or the server runs without a prior window: this will not
    // change while it runs, so no more polling.
    $("estimate-status").textContent = `This server does not estimate the prior: ${message}. The “estimated” prior is not offered.`;
    $("estimate-summary").textContent = "— not available";
    $("estimate").classList.add("off");
    table.hidden = true;
    offerPrior("estimated", false);
    $("fill-estimate").disabled = true;
    return;
  }
  if (!res.ok) {
    $("estimate-status").textContent =
      res.status === 401 ? "The estimate needs the API key: enter it above." : `Unavailable: ${message}`;
    $("estimate-summary").textContent = "— unavailable";
    table.hidden = true;
    if (res.status !== 401) state.estimateTimer = setTimeout(loadEstimate, ESTIMATE_POLL_MS);
    return;
  }
  $("estimate").classList.remove("off");
  if ($("prior").dataset.noBalanced !== "yes") offerPrior("estimated", true);
  if (!state.estimateShown) {
    // Folded away on first sight when a table of every class would push the predictions off screen.
    state.estimateShown = true;
    $("estimate").open = body.classes.length <= 12;
  }
  state.estimate = body.estimate;
  $("fill-estimate").disabled = !body.estimate;
  $("estimate-status").textContent = describeEstimate(body);
  $("estimate-summary").textContent = body.ready
    ? `— ready · ${body.images} images`
    : `— not ready · ${body.images} of ${body.min_images} images`;
  $("estimate").dataset.ready = body.ready ? "yes" : "no";
  $("estimate").dataset.updated = body.updated_at || ""; // which estimate is shown (tests wait on it)
  if (body.estimate) {
    table.tBodies[0].replaceChildren(
      ...body.classes.map((name, i) => {
        const fill = el("span");
        fill.style.width = `${body.estimate[i] * 100}%`;
        const bar = el("div", { className: "bar" }, fill);
        bar.setAttribute("aria-hidden", "true");
        return el(
          "tr",
          {},
          el("th", { scope: "row", textContent: name }),
          el("td", { className: "est" }, bar, el("span", { className: "pct", textContent: percent(body.estimate[i]) })),
          el("td", { className: "pct", textContent: body.std ? `± ${(body.std[i] * 100).toFixed(1)}` : "± ?" }),
          el("td", { className: "pct", textContent: percent(body.train[i]) }),
        );
      }),
    );
  }
  table.hidden = !body.estimate;
  state.estimateTimer = setTimeout(loadEstimate, ESTIMATE_POLL_MS);
}

function describeEstimate(body) {
  const plural = (n) => `${n} image${n === 1 ? "" : "s"}`;
  if (!body.estimate) {
    return `No estimate yet: the server has seen ${plural(body.seen)}; it needs ${plural(body.min_images)} before “estimated” is applied.`;
  }
  const when = body.updated_at ? ` · updated ${new Date(body.updated_at).toLocaleTimeString()}` : "";
  const rests = `rests on the last ${plural(body.images)} (window ${body.window})`;
  const distance = `distance to the training prior ${body.distance_to_train.toFixed(2)} (total variation)`;
  if (body.ready) return `Ready: ${rests} · ${distance}${when}.`;
  return `Not ready: ${rests}, of the ${plural(body.min_images)} it needs; requests for “estimated” get balanced until then${when}.`;
}

// --- wiring -------------------------------------------------------------------------------------

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    $("file").click();
  }
});
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  addFiles(e.dataTransfer.files);
});
$("file").addEventListener("change", (e) => {
  addFiles(e.target.files);
  e.target.value = ""; // choosing the same file again is a new choice
});
// A paste of files anywhere on the page (a screenshot, an image copied from a browser); a paste of
// text into the API key field is left alone.
document.addEventListener("paste", (e) => {
  const files = e.clipboardData ? [...e.clipboardData.files] : [];
  if (!files.length) return;
  e.preventDefault();
  addFiles(files, (f) => {
    state.pasted += 1;
    const ext = (f.type.split("/")[1] || "bin").replace("jpeg", "jpg");
    return `pasted-${state.pasted}.${ext}`;
  });
});
$("prior").addEventListener("change", priorChanged);
$("topk").addEventListener("change", reclassify);
$("apply-custom").addEventListener("click", reclassify);
$("fill-uniform").addEventListener("click", () => fillCustom(state.classes.map(() => 1)));
$("fill-train").addEventListener("click", () => fillCustom(state.trainCounts));
$("fill-estimate").addEventListener("click", () => fillCustom(state.estimate && state.estimate.map((p) => p * 100)));
$("clear").addEventListener("click", clearCards);
$("estimate-refresh").addEventListener("click", loadEstimate);
$("viewer-close").addEventListener("click", () => $("viewer").close());
$("viewer").addEventListener("click", (e) => {
  if (e.target === $("viewer")) $("viewer").close(); // a click on the backdrop
});
$("apikey").addEventListener("change", () => {
  loadModelInfo();
  loadEstimate();
});
loadModelInfo();
loadEstimate();
