// GAR web demo: image + SAM prompts → regions <PromptK>; Describe / Ask stream the answer.
// Plain JS, no dependencies, talks only to this server.
"use strict";
const $ = (id) => document.getElementById(id);
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const state = {
  image: null, b64: null, maxRegions: 5, sam: false,
  regions: [], active: -1, drag: null, messages: [], regionsOfChat: null, busy: false,
};
const canvas = $("canvas"), ctx = canvas.getContext("2d");

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}
function status(text, error) { $("status").textContent = text || ""; $("status").className = error ? "error" : ""; }
async function errorText(res) {
  try { const j = await res.json(); return j.error ? j.error.message : res.statusText; } catch (e) { return res.statusText; }
}

// ---- image loading -------------------------------------------------------------------------
function openFile(file) {
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      state.image = img; state.b64 = reader.result;
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      state.regions = []; state.active = -1; resetChat();
      $("hint").hidden = true; newRegion(); draw();
    };
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}
$("file").onchange = (e) => e.target.files[0] && openFile(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) openFile(e.dataTransfer.files[0]); };

// ---- regions -------------------------------------------------------------------------------
function newRegion() {
  if (!state.image) return;
  const cur = state.regions[state.active];
  if (cur && !cur.layer) return; // reuse an empty region
  if (state.regions.length >= state.maxRegions) { status(`at most ${state.maxRegions} regions`, true); return; }
  state.regions.push({ points: [], box: null, scribble: null, rle: null, maskB64: null, layer: null, area: 0 });
  state.active = state.regions.length - 1;
  renderRegions();
}
$("newregion").onclick = newRegion;

function renderRegions() {
  const ul = $("regions"); ul.innerHTML = "";
  state.regions.forEach((r, i) => {
    const li = document.createElement("li");
    li.style.background = COLORS[i % COLORS.length];
    li.className = i === state.active ? "active" : "";
    li.dataset.ready = r.layer ? "1" : "0";
    li.textContent = `<Prompt${i}>` + (r.layer ? ` ${r.area} px` : " (empty)");
    const del = document.createElement("button"); del.textContent = "×"; del.title = "remove";
    del.onclick = (e) => { e.stopPropagation(); state.regions.splice(i, 1); state.active = Math.min(state.active, state.regions.length - 1); resetChat(); renderRegions(); draw(); };
    li.appendChild(del);
    li.onclick = () => { state.active = i; renderRegions(); };
    ul.appendChild(li);
  });
  const ready = state.regions.filter((r) => r.layer).length;
  $("describe").disabled = !(state.regions[state.active] && state.regions[state.active].layer) || state.busy;
  $("ask").disabled = !state.image || state.busy;
  canvas.dataset.regions = String(ready);
}

// COCO RLE (column-major counts) → a coloured, translucent layer.
function layerFromRle(rle, color) {
  const [h, w] = rle.size;
  const layer = document.createElement("canvas"); layer.width = w; layer.height = h;
  const lctx = layer.getContext("2d"); const img = lctx.createImageData(w, h);
  const c = [1, 3, 5].map((k) => parseInt(color.slice(k, k + 2), 16));
  let pos = 0, on = false, area = 0;
  for (const n of rle.counts) {
    if (on) for (let k = pos; k < pos + n; k++) {
      const x = Math.floor(k / h), y = k % h, o = (y * w + x) * 4;
      img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 110; area++;
    }
    pos += n; on = !on;
  }
  lctx.putImageData(img, 0, 0);
  return { layer, area };
}

function draw() {
  if (!state.image) return;
  ctx.drawImage(state.image, 0, 0);
  const s = Math.max(2, canvas.width / 300);
  state.regions.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    if (r.layer) ctx.drawImage(r.layer, 0, 0);
    for (const [x, y, l] of r.points) {
      ctx.fillStyle = l ? "#0c0" : "#d00"; ctx.strokeStyle = "#fff"; ctx.lineWidth = s / 2;
      ctx.beginPath(); ctx.arc(x, y, 2 * s, 0, 7); ctx.fill(); ctx.stroke();
    }
    if (r.box) { ctx.strokeStyle = color; ctx.lineWidth = s; const [a, b, c, d] = r.box; ctx.strokeRect(a, b, c - a, d - b); }
    if (r.scribble) { ctx.strokeStyle = color; ctx.lineWidth = s; ctx.beginPath(); r.scribble.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.stroke(); }
    if (r.label) { ctx.font = `bold ${6 * s}px sans-serif`; ctx.fillStyle = color; ctx.fillText(`<Prompt${i}>`, r.label[0], r.label[1]); }
  });
  if (state.drag && state.drag.box) { ctx.strokeStyle = "#ff0"; ctx.lineWidth = s; const [a, b, c, d] = state.drag.box; ctx.strokeRect(a, b, c - a, d - b); }
}

function labelPos(rle) { // centroid-ish: first pixel of the middle run
  const [h] = rle.size; let pos = 0, on = false; const runs = [];
  for (const n of rle.counts) { if (on && n) runs.push([pos, n]); pos += n; on = !on; }
  if (!runs.length) return null; const [p, n] = runs[Math.floor(runs.length / 2)]; const k = p + Math.floor(n / 2);
  return [Math.floor(k / h), k % h];
}

async function segment(r) {
  const body = { image: state.b64, format: "rle" };
  if (r.points.length) body.points = r.points;
  if (r.box) body.box = r.box;
  if (r.scribble) body.scribble = r.scribble;
  status("segmenting…");
  const res = await fetch("/v1/segment", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) { status("segment: " + (await errorText(res)), true); return; }
  const j = await res.json();
  const i = state.regions.indexOf(r); if (i < 0) return;
  setMask(r, i, j.rle);
  status(`mask: ${j.area} px, score ${j.score.toFixed(3)}${j.cached_embedding ? " (cached embedding)" : ""}`);
}
function setMask(r, i, rle) {
  const { layer, area } = layerFromRle(rle, COLORS[i % COLORS.length]);
  Object.assign(r, { rle, layer, area, label: labelPos(rle), maskB64: null });
  resetChat(); renderRegions(); draw();
}

function imagePoint(e) {
  const rect = canvas.getBoundingClientRect();
  return [Math.round((e.clientX - rect.left) * canvas.width / rect.width), Math.round((e.clientY - rect.top) * canvas.height / rect.height)];
}
const tool = () => document.querySelector("input[name=tool]:checked").value;
canvas.onmousedown = (e) => {
  if (!state.image) return;
  if (!state.regions[state.active]) newRegion();
  const p = imagePoint(e);
  if (tool() === "box") state.drag = { start: p, box: null };
  if (tool() === "scribble") state.drag = { line: [p] };
};
canvas.onmousemove = (e) => {
  if (!state.drag) return;
  const p = imagePoint(e), d = state.drag;
  if (d.start) d.box = [Math.min(d.start[0], p[0]), Math.min(d.start[1], p[1]), Math.max(d.start[0], p[0]), Math.max(d.start[1], p[1])];
  if (d.line) { d.line.push(p); const r = state.regions[state.active]; r.scribble = d.line; }
  draw();
};
canvas.onmouseup = (e) => {
  const r = state.regions[state.active]; if (!state.image || !r) return;
  const d = state.drag; state.drag = null;
  if (tool() === "point") {
    const [x, y] = imagePoint(e);
    r.points.push([x, y, e.shiftKey || $("negative").checked ? 0 : 1]);
  } else if (d && d.box && d.box[2] - d.box[0] > 2 && d.box[3] - d.box[1] > 2) {
    r.box = d.box;
  } else if (d && d.line && d.line.length > 1) {
    r.scribble = d.line;
  } else { draw(); return; }
  draw(); segment(r);
};

$("maskfile").onchange = (e) => {
  const f = e.target.files[0]; if (!f || !state.image) return;
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      if (!state.regions[state.active] || state.regions[state.active].layer) newRegion();
      const r = state.regions[state.active]; const i = state.active;
      const c = document.createElement("canvas"); c.width = canvas.width; c.height = canvas.height;
      const cx = c.getContext("2d"); cx.drawImage(img, 0, 0, c.width, c.height);
      const px = cx.getImageData(0, 0, c.width, c.height).data; const counts = []; let on = false, run = 0;
      for (let x = 0; x < c.width; x++) for (let y = 0; y < c.height; y++) {
        const o = (y * c.width + x) * 4, v = px[o] + px[o + 1] + px[o + 2] > 0;
        if (v !== on) { counts.push(run); run = 0; on = v; } run++;
      }
      counts.push(run);
      setMask(r, i, { size: [c.height, c.width], counts });
      r.maskB64 = reader.result;
    };
    img.src = reader.result;
  };
  reader.readAsDataURL(f);
};

// ---- conversation --------------------------------------------------------------------------
function resetChat() { state.messages = []; state.regionsOfChat = null; $("chat").innerHTML = ""; }
$("reset").onclick = () => { resetChat(); status(""); };
function addMsg(role, text) {
  const div = document.createElement("div"); div.className = "msg " + role; div.textContent = text;
  $("chat").appendChild(div); $("chat").scrollTop = 1e9; return div;
}
function wireRegion(r) { return r.maskB64 ? { mask: r.maskB64 } : { rle: r.rle }; }

// Reads an SSE response, calling onEvent(name, data) per event.
async function readSse(res, onEvent) {
  const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = "";
  for (;;) {
    const { done, value } = await reader.read(); if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i); buf = buf.slice(i + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (data) onEvent(name, data);
    }
  }
}

async function run(userText, url, body, pickText) {
  state.busy = true; renderRegions();
  addMsg("user", userText);
  const out = addMsg("assistant", ""); out.dataset.state = "streaming";
  let answer = "";
  const poll = setInterval(async () => {
    try { const h = await (await fetch("/health")).json(); if (h.queue_depth > 0) status(`queue depth ${h.queue_depth}`); } catch (e) { /* offline */ }
  }, 1000);
  try {
    const res = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!res.ok) throw new Error(await errorText(res));
    status("waiting for the model…");
    await readSse(res, (name, data) => {
      if (data === "[DONE]") return;
      const j = JSON.parse(data);
      if (name === "queued") status(j.position ? `queued: ${j.position} ahead` : "starting…");
      else if (name === "started") status("generating…");
      else if (name === "error" || j.error) throw new Error(j.error.message);
      else if (name === "done") { answer = j.text; status(`${j.tokens.length} tokens, ${j.timings.tokens_per_s.toFixed(1)} tok/s`); }
      else { const t = pickText(j); if (t) { answer += t; out.textContent = answer; status("generating…"); } }
    });
    out.textContent = answer; out.dataset.state = "done";
    state.messages.push({ role: "user", text: userText }, { role: "assistant", text: answer });
    if (url.endsWith("completions")) status("done");
  } catch (e) {
    out.className = "msg error"; out.textContent = "error: " + e.message; out.dataset.state = "error"; status(e.message, true);
  } finally { clearInterval(poll); state.busy = false; renderRegions(); }
}

$("describe").onclick = () => {
  const r = state.regions[state.active]; if (!r || !r.rle) return;
  resetChat(); state.regionsOfChat = [wireRegion(r)];
  run("Describe this masked region in detail.", "/v1/describe",
    { image: state.b64, regions: state.regionsOfChat, stream: true }, (j) => j.text);
};
$("ask").onclick = () => {
  const q = $("question").value.trim(); if (!q || !state.image) return;
  $("question").value = "";
  if (!state.messages.length) {
    state.regionsOfChat = state.regions.filter((r) => r.rle).map(wireRegion);
    run(q, "/v1/describe", { image: state.b64, regions: state.regionsOfChat, question: q, stream: true }, (j) => j.text);
    return;
  }
  // Follow-up: the OpenAI-compatible endpoint with the whole conversation.
  const messages = state.messages.map((m, k) => (k === 0
    ? { role: "user", content: [{ type: "image_url", image_url: { url: state.b64 } }, { type: "text", text: m.text }] }
    : { role: m.role, content: m.text }));
  messages.push({ role: "user", content: q });
  run(q, "/v1/chat/completions", { messages, regions: state.regionsOfChat, stream: true },
    (j) => j.choices && j.choices[0] && j.choices[0].delta.content);
};
$("question").onkeydown = (e) => { if (e.key === "Enter") $("ask").click(); };

// ---- start ---------------------------------------------------------------------------------
$("apikey").value = localStorage.getItem("gar-api-key") || "";
$("apikey").onchange = () => localStorage.setItem("gar-api-key", $("apikey").value);
fetch("/v1/models", { headers: headers() }).then((r) => r.json()).then((j) => {
  const m = j.data && j.data[0]; if (!m) return;
  state.maxRegions = m.prompt_numbers; state.sam = m.sam;
  $("model").textContent = `${m.id} · up to ${m.prompt_numbers} regions` + (m.sam ? "" : " · no SAM: upload masks");
}).catch(() => status("cannot reach the server", true));
renderRegions();
