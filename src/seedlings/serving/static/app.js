// The web page: send each chosen photo to /v1/predict and show the top-5 species as bars.
// No framework and no CDN: the page must work offline, served by the app alone.
"use strict";

const MAX_PARALLEL = 4;  // requests in flight at once; the server batches them anyway
const TOP_K = 5;

const state = { species: {}, tokenRequired: false, queue: [], running: 0, classes: [], feedback: false,
                model: null };
const $ = (id) => document.getElementById(id);

function percent(p) {
  return (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModelInfo() {
  try {
    const [model, species] = await Promise.all([
      fetch("/v1/model").then((r) => (r.ok ? r.json() : Promise.reject(r))),
      fetch("/static/species.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({})),
    ]);
    state.species = species;
    state.tokenRequired = Boolean(model.serving && model.serving.token_required);
    state.feedback = Boolean(model.serving && model.serving.feedback);
    state.classes = model.classes;
    state.model = { name: model.name, version: model.version };
    if (state.feedback) {
      $("storage-note").textContent = "Photos are sent only to this server. A photo you correct with " +
        "\u201cWrong species?\u201d is kept to improve the model; other photos are not stored.";
    }
    $("token-box").hidden = !state.tokenRequired;
    const f1 = model.metrics && typeof model.metrics.f1_micro === "number"
      ? `, validation micro-F1 ${percent(model.metrics.f1_micro)}` : "";
    $("model-info").textContent =
      `Model ${model.name} ${model.version} (${model.classes.length} species${f1}).`;
    listSpecies(model.classes);
  } catch (err) {
    $("model-info").textContent = "The model is not ready yet; predictions may fail. Reload in a moment.";
  }
}

function listSpecies(classes) {
  const list = $("species-list");
  list.replaceChildren();
  for (const name of classes) {
    const term = document.createElement("dt");
    term.textContent = name;
    const text = document.createElement("dd");
    text.textContent = describe(name) || "No description yet.";
    list.append(term, text);
  }
}

function describe(species) {
  const info = state.species[species];
  if (!info) return "";
  return `${info.latin} (${info.kind}). ${info.text}`;
}

function renderBars(container, topK) {
  container.replaceChildren();
  for (const { species, probability } of topK) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = species;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = Math.max(0.5, 100 * probability).toFixed(1) + "%";
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(probability);
    row.append(name, track, pct);
    container.append(row);
  }
}

function showPrediction(card, prediction, file, version) {
  const verdict = card.querySelector(".verdict");
  if (prediction.unknown) {
    card.classList.add("unknown");
    verdict.textContent = `Not sure: this does not look like any of the species the model knows ` +
      `(best guess ${prediction.species}, ${percent(prediction.confidence)}).`;
  } else {
    verdict.textContent = `${prediction.species} (${percent(prediction.confidence)})`;
    card.querySelector(".description").textContent = describe(prediction.species);
  }
  renderBars(card.querySelector(".bars"), prediction.top_k);
  if (state.feedback) addFeedback(card, prediction, file, version);
}

// "Wrong species?": the photo is sent again with the right label (the server keeps nothing per prediction).
function addFeedback(card, prediction, file, version) {
  const slot = card.querySelector(".feedback-slot");
  slot.replaceChildren($("feedback-template").content.cloneNode(true));
  const form = slot.querySelector(".feedback-form");
  const select = form.querySelector(".species-select");
  for (const name of state.classes) {
    if (name !== prediction.species || prediction.unknown) select.append(new Option(name, name));
  }
  const other = form.querySelector(".other-name");
  const pick = (value) => { form.querySelector(`input[value="${value}"]`).checked = true; };
  select.addEventListener("change", () => pick("known"));
  other.addEventListener("input", () => pick("other"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendFeedback(slot, form, file, prediction, version);
  });
  // A confirmation is a vote too: it is what `seedlings feedback stats` counts as agreement.
  const confirm = slot.querySelector(".confirm");
  if (prediction.unknown) {
    confirm.parentElement.remove();
  } else {
    confirm.addEventListener("click", () => sendFeedback(slot, form, file, prediction, version, prediction.species));
  }
}

function chosenLabel(form) {
  const kind = form.querySelector("input[name=kind]:checked").value;
  if (kind === "known") return form.querySelector(".species-select").value;
  if (kind === "other") {
    const name = form.querySelector(".other-name").value.trim();
    return name ? `other:${name}` : "";
  }
  return "not-a-seedling";
}

async function sendFeedback(slot, form, file, prediction, version, confirmed) {
  const error = form.querySelector(".feedback-error");
  const label = confirmed || chosenLabel(form);
  if (!label) {
    error.textContent = "Type the name of the species, or pick another answer.";
    error.hidden = false;
    return;
  }
  const body = new FormData();
  body.append("file", file, file.name || "photo");
  body.append("species", label);
  body.append("predicted", prediction.species);
  body.append("confidence", String(prediction.confidence));
  if (version) body.append("model_version", version);
  const buttons = slot.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  try {
    const response = await fetch("/v1/feedback", { method: "POST", body, headers: authHeaders() });
    if (!response.ok) {
      error.textContent = await errorMessage(response);
      error.hidden = false;
      slot.querySelector(".feedback").open = true;  // where the message shows
      return;
    }
    const shown = label.startsWith("other:") ? label.slice(6) : label.replace("not-a-seedling", "not a seedling");
    const thanks = slot.querySelector(".thanks");
    thanks.textContent = `Thank you: saved as \u201c${shown}\u201d. This photo is kept to improve the model.`;
    thanks.hidden = false;
    slot.querySelector(".feedback").remove();
    const row = slot.querySelector(".confirm-row");
    if (row) row.remove();
  } catch (err) {
    error.textContent = "Could not reach the server: check the connection and try again.";
    error.hidden = false;
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function showError(card, message) {
  card.classList.add("failed");
  card.querySelector(".verdict").textContent = "Could not identify this photo.";
  const error = card.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      if (response.status === 401) {
        $("token-box").hidden = false;
        $("token-box").open = true;
      }
      return body.error.message;
    }
  } catch (err) { /* not JSON: fall through */ }
  return `The server answered ${response.status} ${response.statusText}.`;
}

async function predict(file, card) {
  const form = new FormData();
  form.append("file", file, file.name || "photo");
  try {
    const response = await fetch(`/v1/predict?top_k=${TOP_K}`, {
      method: "POST", body: form, headers: authHeaders(),
    });
    if (!response.ok) {
      showError(card, await errorMessage(response));
      return;
    }
    const body = await response.json();
    showPrediction(card, body.predictions[0], file, body.model && body.model.version);
  } catch (err) {
    showError(card, "Could not reach the server: check the connection and try again.");
  }
}

function pump() {
  while (state.running < MAX_PARALLEL && state.queue.length) {
    const [file, card] = state.queue.shift();
    state.running += 1;
    predict(file, card).finally(() => {
      state.running -= 1;
      card.classList.remove("busy");
      pump();
    });
  }
  if (!state.running && !state.queue.length) $("status").textContent = "All photos identified.";
}

function addCard(file) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  const name = file.name || "pasted photo";
  card.querySelector(".file").textContent = name;
  const img = card.querySelector(".preview");
  img.alt = `Preview of ${name}`;
  if (file.type.startsWith("image/")) {
    img.src = URL.createObjectURL(file);
  } else {
    img.hidden = true;
  }
  card.classList.add("busy");
  $("results").prepend(card);
  $("clear").hidden = false;
  return card;
}

function handleFiles(files) {
  const list = Array.from(files || []);
  if (!list.length) return;
  $("status").textContent = `Identifying ${list.length} photo${list.length > 1 ? "s" : ""}…`;
  for (const file of list) state.queue.push([file, addCard(file)]);
  pump();
}

function clearResults() {
  for (const img of $("results").querySelectorAll("img[src^='blob:']")) URL.revokeObjectURL(img.src);
  $("results").replaceChildren();
  $("clear").hidden = true;
  $("file-input").focus();
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const stop = (event) => { event.preventDefault(); event.stopPropagation(); };
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => { stop(event); zone.classList.add("dragging"); });
  }
  document.addEventListener("dragleave", (event) => {
    if (event.target === document.documentElement || !event.relatedTarget) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    stop(event);
    zone.classList.remove("dragging");
    handleFiles(event.dataTransfer && event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData ? event.clipboardData.files : []);
    if (files.length) handleFiles(files);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["file-input", "camera-input"]) {
    $(id).addEventListener("change", (event) => {
      handleFiles(event.target.files);
      event.target.value = "";  // choosing the same photo again still triggers a change
    });
  }
  $("clear").addEventListener("click", clearResults);
  setUpDropZone();
  loadModelInfo();
});
