// stddaq web page: the live image, the acquisition and the stack's health.
// One WebSocket (/ws): status messages (JSON text) once a second, 8-bit frames (binary:
// 4-byte little-endian header length, JSON header, pixels) a few times a second. The page
// acknowledges every drawn frame; it reconnects by itself when the connection drops.
"use strict";

const $ = (id) => document.getElementById(id);

const COLORMAPS = {
  grey: [[0, 0, 0], [255, 255, 255]],
  viridis: [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
  inferno: [[0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
    [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164]],
  hot: [[0, 0, 0], [230, 0, 0], [255, 210, 0], [255, 255, 255]],
};

function makeLut(stops) {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) {
      lut[i * 3 + c] = Math.round(stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f);
    }
  }
  return lut;
}

const state = {
  socket: null,
  retryMs: 500,
  token: sessionStorage.getItem("stddaq-token") || "",
  canControl: true,
  shape: null,           // [rows, columns] of the full image
  region: null,          // {x0, y0, w, h} asked for
  frame: null,           // header of the frame on the canvas
  frameArrived: 0,
  lut: makeLut(COLORMAPS.grey),
  lastPixels: null,
  lastProbe: 0,
  pointer: null,
  status: null,
};

// ------------------------------------------------------------------ connection
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onopen = () => {
    state.retryMs = 500;
    setConnection(true);
    sendView();
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onText(JSON.parse(event.data));
    else onFrame(event.data);
  };
  socket.onclose = () => {
    setConnection(false);
    state.socket = null;
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  };
  socket.onerror = () => socket.close();
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
  }
}

function setConnection(up) {
  const pill = $("connection");
  pill.textContent = up ? "connected" : "disconnected: reconnecting…";
  pill.className = "pill " + (up ? "pill-good" : "pill-bad");
  document.body.dataset.connected = up ? "yes" : "no";
}

function onText(message) {
  if (message.type === "status") onStatus(message);
  else if (message.type === "probe") onProbe(message);
  else if (message.type === "error") console.warn(message.detail);
}

// ------------------------------------------------------------------ image
function viewportBox() {
  const box = $("viewport").getBoundingClientRect();
  return { w: Math.max(1, box.width), h: Math.max(1, box.height) };
}

function sendView() {
  if (!state.shape) {
    send({ type: "view", max_w: 1024, max_h: 1024, ...contrast() });
    return;
  }
  const box = viewportBox();
  const dpr = window.devicePixelRatio || 1;
  const r = state.region;
  const scale = Math.min(box.w / r.w, box.h / r.h);
  send({
    type: "view", x0: Math.round(r.x0), y0: Math.round(r.y0), w: Math.round(r.w), h: Math.round(r.h),
    max_w: Math.max(1, Math.ceil(r.w * scale * dpr)), max_h: Math.max(1, Math.ceil(r.h * scale * dpr)),
    ...contrast(),
  });
}

function contrast() {
  const num = (id, fallback) => {
    const v = parseFloat($(id).value);
    return Number.isFinite(v) ? v : fallback;
  };
  let pLo = num("p-lo", 1), pHi = num("p-hi", 99.5);
  if (!(pLo >= 0 && pHi <= 100 && pLo < pHi)) { pLo = 1; pHi = 99.5; }
  return { auto: $("auto").checked, p_lo: pLo, p_hi: pHi, lo: num("lo", 0), hi: num("hi", 1000) };
}

function wholeImage() {
  if (!state.shape) return;
  const [rows, columns] = state.shape;
  state.region = { x0: 0, y0: 0, w: columns, h: rows };
}

function onFrame(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const pixels = new Uint8Array(buffer, 4 + length);
  const shapeChanged = !state.shape || state.shape[0] !== header.shape[0] || state.shape[1] !== header.shape[1];
  state.shape = header.shape;
  if (shapeChanged || !state.region) {
    wholeImage();
    sendView();
  }
  state.frame = header;
  state.frameArrived = performance.now();
  state.lastPixels = pixels;
  draw();
  send({ type: "ack" });
}

function draw() {
  const header = state.frame;
  if (!header) return;
  const [rows, columns] = header.size;
  const canvas = $("image");
  if (canvas.width !== columns || canvas.height !== rows) {
    canvas.width = columns;
    canvas.height = rows;
  }
  const context = canvas.getContext("2d");
  const image = context.createImageData(columns, rows);
  const out = image.data;
  const lut = state.lut;
  const pixels = state.lastPixels;
  for (let i = 0, j = 0; i < pixels.length; i++, j += 4) {
    const k = pixels[i] * 3;
    out[j] = lut[k]; out[j + 1] = lut[k + 1]; out[j + 2] = lut[k + 2]; out[j + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  // The canvas keeps the region's aspect and fills the viewport.
  const [x0, y0, w, h] = header.region;
  const box = viewportBox();
  const scale = Math.min(box.w / w, box.h / h);
  canvas.style.width = `${Math.floor(w * scale)}px`;
  canvas.style.height = `${Math.floor(h * scale)}px`;
  Object.assign(canvas.dataset, {
    imageId: header.image_id, x0, y0, w, h, step: header.step, lo: header.lo, hi: header.hi,
  });
  $("no-image").hidden = true;
  $("image-id").textContent = header.image_id;
  $("image-shape").textContent = `${header.shape[1]} × ${header.shape[0]} ${header.dtype}`;
  $("region").textContent = `x ${x0}–${x0 + w - 1}, y ${y0}–${y0 + h - 1}`;
  $("resolution").textContent = header.step === 1 ? "full resolution" : `1 pixel of ${header.step} × ${header.step} shown (zoom in for full resolution)`;
  if ($("auto").checked) {
    $("lo").value = header.lo;
    $("hi").value = header.hi;
  }
  drawHistogram(header);
  updateAge();
}

function drawHistogram(header) {
  const canvas = $("histogram");
  const width = canvas.clientWidth || 600;
  if (canvas.width !== width) canvas.width = width;
  const context = canvas.getContext("2d");
  const { counts, min, max } = header.hist;
  context.clearRect(0, 0, canvas.width, canvas.height);
  const peak = Math.max(1, ...counts);
  const bar = canvas.width / counts.length;
  context.fillStyle = "#4ea1ff";
  counts.forEach((count, i) => {
    const height = (Math.log1p(count) / Math.log1p(peak)) * (canvas.height - 4);
    context.fillRect(i * bar, canvas.height - height, Math.max(1, bar - 1), height);
  });
  const xOf = (value) => ((value - min) / (max - min)) * canvas.width;
  context.strokeStyle = "#f0c040";
  context.lineWidth = 2;
  for (const value of [header.lo, header.hi]) {
    const x = Math.min(canvas.width - 1, Math.max(1, xOf(value)));
    context.beginPath(); context.moveTo(x, 0); context.lineTo(x, canvas.height); context.stroke();
  }
  $("hist-min").textContent = formatNumber(min);
  $("hist-max").textContent = formatNumber(max);
}

function updateAge() {
  const header = state.frame;
  if (!header) return;
  const age = header.age_s + (performance.now() - state.frameArrived) / 1000;
  $("image-age").textContent = `${age.toFixed(1)} s`;
}

// Pointer position in full-image pixels (the pixel the canvas shows there).
function imagePixelAt(event) {
  const header = state.frame;
  if (!header) return null;
  const rect = $("image").getBoundingClientRect();
  const [rows, columns] = header.size;
  const cx = Math.floor(((event.clientX - rect.left) / rect.width) * columns);
  const cy = Math.floor(((event.clientY - rect.top) / rect.height) * rows);
  if (cx < 0 || cy < 0 || cx >= columns || cy >= rows) return null;
  return { x: header.region[0] + cx * header.step, y: header.region[1] + cy * header.step };
}

function onProbe(message) {
  if (state.pointer && message.x === state.pointer.x && message.y === state.pointer.y) {
    const cell = $("pointer-value");
    cell.textContent = message.value === null ? "–" : `${formatNumber(message.value)} (image ${message.image_id})`;
    cell.dataset.imageId = message.image_id;
    cell.dataset.value = message.value;
    cell.dataset.x = message.x;
    cell.dataset.y = message.y;
  }
}

function setupImageControls() {
  const viewport = $("viewport");
  let drag = null;
  viewport.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(event, event.deltaY < 0 ? 0.8 : 1.25);
  }, { passive: false });
  viewport.addEventListener("mousedown", (event) => {
    if (!state.region) return;
    drag = { x: event.clientX, y: event.clientY, region: { ...state.region } };
    viewport.classList.add("dragging");
  });
  window.addEventListener("mouseup", () => { drag = null; viewport.classList.remove("dragging"); });
  viewport.addEventListener("mousemove", (event) => {
    if (drag && state.frame) {
      const rect = $("image").getBoundingClientRect();
      const perPixel = drag.region.w / rect.width;
      state.region = clampRegion({
        ...drag.region,
        x0: drag.region.x0 - (event.clientX - drag.x) * perPixel,
        y0: drag.region.y0 - (event.clientY - drag.y) * perPixel,
      });
      sendView();
      return;
    }
    const at = imagePixelAt(event);
    state.pointer = at;
    $("pointer").textContent = at ? `x ${at.x}, y ${at.y}` : "–";
    if (!at) { $("pointer-value").textContent = "–"; return; }
    const now = performance.now();
    if (now - state.lastProbe > 80) {
      state.lastProbe = now;
      send({ type: "probe", x: at.x, y: at.y });
    }
  });
  $("zoom-in").onclick = () => zoomAt(null, 0.5);
  $("zoom-out").onclick = () => zoomAt(null, 2);
  $("zoom-reset").onclick = () => { wholeImage(); sendView(); };
  for (const id of ["auto", "p-lo", "p-hi", "lo", "hi"]) $(id).addEventListener("change", sendView);
  for (const id of ["lo", "hi"]) $(id).addEventListener("input", () => { $("auto").checked = false; });
  $("colormap").onchange = () => {
    state.lut = makeLut(COLORMAPS[$("colormap").value] || COLORMAPS.grey);
    draw();
  };
  window.addEventListener("resize", sendView);
}

function clampRegion(r) {
  const [rows, columns] = state.shape;
  const w = Math.min(columns, Math.max(8, r.w));
  const h = Math.min(rows, Math.max(8, r.h));
  return {
    w, h,
    x0: Math.min(columns - w, Math.max(0, r.x0)),
    y0: Math.min(rows - h, Math.max(0, r.y0)),
  };
}

function zoomAt(event, factor) {
  if (!state.region || !state.frame) return;
  const r = state.region;
  let fx = 0.5, fy = 0.5;
  if (event) {
    const rect = $("image").getBoundingClientRect();
    fx = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    fy = Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height));
  }
  const cx = r.x0 + fx * r.w, cy = r.y0 + fy * r.h;
  const w = r.w * factor, h = r.h * factor;
  state.region = clampRegion({ x0: cx - fx * w, y0: cy - fy * h, w, h });
  sendView();
}

// ------------------------------------------------------------------ status
function onStatus(message) {
  state.status = message;
  $("detector").textContent = message.detector;
  document.title = `stddaq ${message.detector}`;
  const health = message.health || {};
  const status = health.status;
  renderAcquisition(status, health);
  renderHealth(health, message);
  if (!message.image.stream) {
    $("no-image").textContent = (message.notes || []).join(" ") || "no live stream";
  } else if (message.image.image_id === undefined) {
    $("no-image").textContent = `waiting for the live stream ${message.image.stream}…`;
  }
  if (message.token_required !== undefined) updateMode(message.token_required);
}

const BUSY = new Set(["started", "creating_file", "file_created", "waiting_for_first_image", "saving_file", "file_saved", "stop"]);

function renderAcquisition(status, health) {
  const badge = $("state");
  if (!status) {
    badge.textContent = "driver down";
    badge.className = "badge error";
    $("start").disabled = true;
    $("stop").disabled = true;
    return;
  }
  badge.textContent = status.state.replaceAll("_", " ");
  badge.className = "badge " + (status.state === "recording" ? "recording" : status.state === "error" ? "error" : BUSY.has(status.state) ? "busy" : "");
  document.body.dataset.state = status.state;
  const total = status.n_image;
  const written = status.images_written;
  $("acq-written").textContent = total ? `${written} of ${total}` : `${written}${status.busy ? " · until stopped" : ""}`;
  $("progress-bar").style.width = total ? `${Math.min(100, (100 * written) / total)}%` : status.busy ? "100%" : "0";
  const rate = health.acquisition_rate_hz;
  $("acq-rate").textContent = status.busy && rate != null ? `${formatNumber(rate)} images/s` : "–";
  $("acq-missing").textContent = status.images_missing;
  $("acq-id").textContent = status.acquisition_id || "–";
  $("acq-files").textContent = filesText(status);
  $("start").disabled = status.busy || !state.canControl;
  $("stop").disabled = !status.busy || !state.canControl;
  if (status.last_error && status.state === "error") showError(`acquisition failed: ${status.last_error}`);
  const body = $("history").querySelector("tbody");
  body.replaceChildren(...(health.history || []).map((entry) => row([
    entry.acquisition_id,
    entry.outcome + (entry.last_error ? `: ${entry.last_error}` : ""),
    `${entry.images_written}${entry.n_image ? " of " + entry.n_image : ""}`,
    (entry.master_file ? [entry.master_file] : entry.files || []).join("\n"),
  ])));
  for (const tr of body.children) tr.lastChild.className = "path";
}

// "in DIR:" then the file names (master first): long paths stay readable.
function filesText(status) {
  const files = [...(status.files || [])];
  if (status.master_file) files.unshift(status.master_file);
  if (!files.length) return "";
  const base = (path) => path.slice(path.lastIndexOf("/") + 1);
  const dir = files[0].slice(0, files[0].lastIndexOf("/"));
  const names = files.map((path, i) => base(path) + (status.master_file && i === 0 ? " (master)" : ""));
  return `in ${dir}:\n${names.join("  ")}`;
}

function renderHealth(health, message) {
  $("health-time").textContent = health.time ? `as of ${new Date(health.time * 1000).toLocaleTimeString()}` : "";
  const services = [...(health.services || [])];
  services.push({ name: "live image", up: message.image.age_s !== undefined && message.image.age_s < 5, how: message.image.stream || "none" });
  $("services").querySelector("tbody").replaceChildren(...services.map((s) => {
    const tr = row([s.name, "", s.how + (s.error && !s.up ? ` (${s.error})` : "")]);
    tr.dataset.service = s.name;
    tr.dataset.up = s.up ? "yes" : "no";
    const cell = tr.children[1];
    cell.className = s.up ? "up" : "down";
    cell.innerHTML = `<span class="dot"></span>${s.up ? "up" : "down"}`;
    return tr;
  }));
  const rx = health.receiver || {};
  $("rx-rate").textContent = rx.rate_hz == null ? (rx.exposed ? "–" : "not exposed") : `${formatNumber(rx.rate_hz)} /s`;
  $("rx-received").textContent = rx.frames_received == null ? "–" : formatNumber(rx.frames_received);
  $("rx-missing").textContent = rx.missing_ids == null ? "–" : formatNumber(rx.missing_ids);
  $("rx-rejected").textContent = rx.rejected == null ? "–" : formatNumber(rx.rejected);
  const ring = health.ring || {};
  $("ring-fill").textContent = ring.fill == null ? "–" : `${(100 * ring.fill).toFixed(1)} % of ${ring.slots}`;
  $("ring-overruns").textContent = ring.overruns == null ? "–" : ring.overruns;
  const live = (health.live_viewers || []).map((l) => l.viewers).filter((v) => v != null);
  $("viewers").textContent = `${live.length ? live.reduce((a, b) => a + b, 0) + " on the stream, " : ""}${message.pages} page${message.pages === 1 ? "" : "s"}`;
  $("writers").querySelector("tbody").replaceChildren(...(health.writers || []).map((w) => {
    const tr = row([`${w.index}`, w.alive ? w.state : "not heard", w.images_written, w.images_not_written, w.lag]);
    tr.children[1].className = w.alive ? "" : "down";
    return tr;
  }));
  const notes = [...(message.notes || []), ...(health.not_exposed || [])];
  $("notes").replaceChildren(...notes.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "–" : String(value);
    tr.appendChild(td);
  }
  return tr;
}

function formatNumber(value) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1e6) return value.toExponential(3);
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(Math.abs(value) < 10 ? 2 : 1);
}

// ------------------------------------------------------------------ control
function authHeaders() {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  return headers;
}

async function updateMode(required, force = false) {
  const key = `${required}:${state.token}`;
  if (!force && state.modeKey === key) return;
  state.modeKey = key;
  let ok = !required;
  if (required && state.token) {
    try {
      const answer = await fetch("/api/session", { headers: authHeaders() });
      ok = (await answer.json()).token_ok;
    } catch (error) { ok = false; }
  }
  state.canControl = ok;
  const mode = $("mode");
  mode.textContent = !required ? "control (the stack has no token)" : ok ? "control (token accepted)" : "read-only: enter the stack's token to start and stop";
  mode.className = "mode " + (ok ? "control" : "readonly");
  document.body.dataset.mode = ok ? "control" : "readonly";
  if (state.status) renderAcquisition(state.status.health.status, state.status.health);
}

function showError(text) {
  const box = $("acq-error");
  box.textContent = text;
  box.hidden = false;
}

function apiError(code, body) {
  if (body && typeof body.message === "string") return `${code}: ${body.message}`;
  if (body && typeof body.detail === "string") return `${code}: ${body.detail}`;
  if (body && body.detail !== undefined) return `${code}: ${JSON.stringify(body.detail)}`;
  return `${code}: the driver refused`;
}

async function post(what, body) {
  $("acq-error").hidden = true;
  try {
    const answer = await fetch(`/api/${what}`, { method: "POST", headers: authHeaders(), body: JSON.stringify(body) });
    let payload = null;
    try { payload = await answer.json(); } catch (error) { payload = null; }
    if (!answer.ok) showError(apiError(answer.status, payload));
    return answer.ok;
  } catch (error) {
    showError(`the web service does not answer: ${error}`);
    return false;
  }
}

function setupControls() {
  $("start-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { path: $("path").value.trim() };
    const prefix = $("prefix").value.trim();
    if (prefix) body.file_prefix = prefix;
    const n = $("n-image").value.trim();
    if (n) body.n_image = Number(n);
    post("start", body);
  });
  $("stop").onclick = () => post("stop", {});
  $("token").value = state.token;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("stddaq-token", state.token);
    if (state.status) updateMode(state.status.token_required, true);
  });
}

setupImageControls();
setupControls();
setInterval(updateAge, 250);
connect();
