// deliberate's tree viewer: static, no dependencies. It reads the API like any client, with the
// key given in the URL fragment (#key=...) or typed in, kept for this tab only (sessionStorage).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const X_STEP = 34, Y_STEP = 84, MARGIN = 40;
const PALETTE = ["#2f9e44", "#1971c2", "#e8590c", "#9c36b5", "#0c8599", "#c2255c", "#5c940d", "#862e9c"];
const $ = (id) => document.getElementById(id);

function apiKey() {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("key");
  if (fragment) {
    sessionStorage.setItem("deliberate-key", fragment);
    history.replaceState(null, "", location.pathname);  // the key stays out of the address bar
  }
  return sessionStorage.getItem("deliberate-key") || "";
}

async function api(path) {
  const key = apiKey();
  const response = await fetch(path, {headers: key ? {Authorization: `Bearer ${key}`} : {}});
  if (response.status === 401) askForKey();
  return response;
}

function askForKey() {
  const form = $("key-form");
  form.hidden = false;
  status("this server wants an API key");
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem("deliberate-key", $("key").value);
    location.reload();
  };
}

function status(text) { $("status").textContent = text; }
function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
const short = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);
const mean = (xs) => (xs && xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);
const fixed = (x, digits = 3) => (x === undefined || x === null ? "–" : Number(x).toFixed(digits));

// --- the tree as drawn: nodes by address ("" the root, "0.2" the root's first child's third) ---

class Model {
  constructor() { this.nodes = new Map([["", {address: "", children: []}]]); this.chosen = null; this.entry = null; }

  add(view) {
    const address = view.address;
    const known = this.nodes.get(address);
    const node = Object.assign(known || {children: []}, view);
    if (!known) {
      this.nodes.set(address, node);
      const parent = this.nodes.get(parentOf(address));
      if (parent && !parent.children.includes(address)) parent.children.push(address);
    }
  }

  stats([address, visits, valueSum, score]) {
    const node = this.nodes.get(address);
    if (node) Object.assign(node, {visits, value_sum: valueSum, score});
  }

  static fromStored(entry) {
    const model = new Model();
    const walk = (data, address) => {
      const {children = [], ids, logprobs, sc, ...own} = data;
      model.add({...own, address, self_certainty: mean(sc)});
      children.forEach((child, i) => walk(child, address === "" ? `${i}` : `${address}.${i}`));
    };
    walk(entry.tree.root, "");
    model.entry = entry;
    const select = (entry.trace || []).filter((step) => step.step === "select").pop();
    const address = select && (select.node !== undefined ? select.node : select.index >= 0 ? `${select.index}` : null);
    model.chosen = address !== null && address !== undefined && model.nodes.has(address) ? address : null;
    return model;
  }

  calls() {  // the distinct engine calls that grew nodes, in order
    const calls = new Set();
    for (const node of this.nodes.values()) if (node.call) calls.add(node.call.call);
    return [...calls].sort((a, b) => a - b);
  }
}

const parentOf = (address) => (address.includes(".") ? address.slice(0, address.lastIndexOf(".")) : "");

// --- layout: leaves side by side in depth-first order, each parent above the middle of its children ---

function layout(model, visible) {
  const place = new Map();
  let nextLeaf = 0;
  const visit = (address, depth) => {
    const children = model.nodes.get(address).children.filter((child) => visible.has(child));
    children.forEach((child) => visit(child, depth + 1));
    const x = children.length ? (place.get(children[0]).x + place.get(children[children.length - 1]).x) / 2
                              : MARGIN + X_STEP * nextLeaf++;
    place.set(address, {x, y: MARGIN + Y_STEP * depth, children});
  };
  visit("", 0);
  return {place, width: MARGIN * 2 + X_STEP * Math.max(nextLeaf, 1) + 120,
          height: MARGIN * 2 + Y_STEP * Math.max(...[...place.values()].map((p) => (p.y - MARGIN) / Y_STEP)) + 40};
}

function valueColor(value, low, high) {
  if (value === undefined || value === null) return "#ffffff";
  const t = high > low ? (value - low) / (high - low) : 0.5;
  return `hsl(${Math.round(10 + 110 * t)}, 65%, ${Math.round(82 - 22 * t)}%)`;
}

function answerGroups(model, visible) {
  const groups = new Map();
  for (const node of model.nodes.values()) {
    if (!visible.has(node.address) || !node.terminal) continue;
    const answer = node.answer === undefined || node.answer === null ? "(no answer)" : node.answer;
    if (!groups.has(answer)) groups.set(answer, []);
    groups.get(answer).push(node.address);
  }
  const total = [...groups.values()].reduce((sum, members) => sum + members.length, 0);
  return [...groups.entries()].sort((a, b) => b[1].length - a[1].length)
    .map(([answer, members], i) => ({answer, members, share: members.length / total, color: PALETTE[i % PALETTE.length]}));
}

function draw(view) {
  const {model} = view;
  const upTo = view.upTo;  // the last engine call shown (Infinity: all)
  const visible = new Set([...model.nodes.values()]
    .filter((node) => node.address === "" || !node.call || node.call.call <= upTo).map((node) => node.address));
  // A node whose parent is hidden cannot be drawn (a tree resumed from an older one has no calls for its old nodes).
  for (const address of [...visible]) if (address !== "" && !visible.has(parentOf(address))) visible.delete(address);
  const {place, width, height} = layout(model, visible);
  const svg = $("tree");
  svg.replaceChildren();
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const chosenPath = new Set();
  if (model.chosen !== null && visible.has(model.chosen)) {
    for (let address = model.chosen; ; address = parentOf(address)) { chosenPath.add(address); if (address === "") break; }
  }
  const values = [...visible].map((a) => nodeValue(model.nodes.get(a))).filter((v) => v !== undefined);
  const low = Math.min(...values), high = Math.max(...values);
  const maxVisits = Math.max(1, ...[...visible].map((a) => model.nodes.get(a).visits || 0));
  const groups = answerGroups(model, visible);
  const colorOf = new Map(groups.flatMap((group) => group.members.map((member) => [member, group.color])));
  for (const [address, p] of place) {
    for (const child of p.children) {
      const q = place.get(child);
      const chosen = chosenPath.has(child) ? " chosen" : "";
      svg.append(el("svg:path", {class: `edge${chosen}`, d: `M${p.x},${p.y} C${p.x},${(p.y + q.y) / 2} ${q.x},${(p.y + q.y) / 2} ${q.x},${q.y}`}));
    }
  }
  for (const [address, p] of place) {
    const node = model.nodes.get(address);
    const finish = node.call && node.call.finish_reason;
    const classes = ["node", chosenPath.has(address) && "chosen", address === view.selected && "selected",
                     finish === "length" && "truncated", (node.pruned || finish === "abort") && "pruned"];
    const g = el("svg:g", {class: classes.filter(Boolean).join(" "), "data-address": address,
                           transform: `translate(${p.x},${p.y})`});
    const r = address === "" ? 11 : 5 + 9 * Math.sqrt((node.visits || 0) / maxVisits);
    if (node.terminal) g.append(el("svg:rect", {class: "terminal", x: -r - 3, y: -r - 3, width: 2 * r + 6, height: 2 * r + 6,
                                                 rx: 3, stroke: colorOf.get(address) || "#868e96"}));
    g.append(el("svg:circle", {r, fill: address === "" ? "#1d232b" : valueColor(nodeValue(node), low, high)}));
    g.append(el("svg:title", {}, address === "" ? "the prompt" : short(node.text || "", 300)));
    if (node.visits) g.append(el("svg:text", {x: r + 2, y: -r, class: "visits"}, `${node.visits}`));
    if (node.terminal) g.append(el("svg:text", {y: r + 16, "text-anchor": "middle", class: "answer"}, short(`${node.answer ?? "–"}`, 10)));
    else if (address !== "") g.append(el("svg:text", {class: "step", transform: `translate(${-r},${r + 9}) rotate(28)`},
                                         short((node.text || "").trim(), 16)));
    g.addEventListener("click", () => { view.selected = address; draw(view); showNode(view, address); });
    svg.append(g);
  }
  svg.dataset.nodes = `${place.size}`;
  drawGroups(groups);
  if (view.selected !== null && visible.has(view.selected)) showNode(view, view.selected);
}

function nodeValue(node) {
  if (node.visits) return node.value_sum / node.visits;
  return node.score ?? undefined;
}

function drawGroups(groups) {
  const body = $("groups").tBodies[0];
  body.replaceChildren();
  for (const group of groups) {
    const row = el("tr");
    const swatch = el("span", {class: "swatch", style: `background:${group.color}`});
    const bar = el("div", {class: "bar"});
    bar.append(el("span", {style: `width:${Math.round(100 * group.share)}%`}));
    [swatch, el("span", {}, group.answer), bar, el("span", {}, `${Math.round(100 * group.share)}% (${group.members.length})`)]
      .forEach((cell) => { const td = el("td"); td.append(cell); row.append(td); });
    body.append(row);
  }
}

function showNode(view, address) {
  const node = view.model.nodes.get(address);
  const detail = $("detail");
  detail.replaceChildren();
  detail.append(el("pre", {class: "text"}, address === "" ? view.question || "(the prompt)" : node.text || "(empty step)"));
  const facts = [["node", address === "" ? "root" : address], ["visits", node.visits || 0],
                 ["value", fixed(node.visits ? node.value_sum / node.visits : undefined)], ["score", fixed(node.score)],
                 ["prior", fixed(node.prior)], ["self-certainty", fixed(node.self_certainty)],
                 ["answer", node.terminal ? node.answer ?? "(none)" : "–"]];
  const call = node.call;
  if (call) {
    facts.push(["engine call", `${call.call}${call.request_id ? ` · ${call.request_id}` : ""}`],
               ["prompt tokens", `${call.prompt_tokens} (${call.cached_prompt_tokens} cached)`],
               ["generated", `${call.generated_tokens} tokens, ${call.finish_reason || "?"}`],
               ["took", `${(call.finished_at - call.requested_at).toFixed(2)} s`],
               ["spent so far", `${call.spent_tokens} tokens`]);
  }
  const list = el("dl");
  for (const [name, value] of facts) list.append(el("dt", {}, name), el("dd", {}, `${value}`));
  detail.append(list);
}

function setTimeline(view, follow) {
  const calls = view.model.calls();
  const slider = $("timeline");
  const atEnd = Number(slider.value) >= Number(slider.max);
  slider.max = `${calls.length}`;
  if (follow || atEnd) slider.value = slider.max;
  const position = Number(slider.value);
  view.upTo = position >= calls.length ? Infinity : position === 0 ? 0 : calls[position - 1];
  const shown = [...view.model.nodes.values()].filter((n) => n.call && n.call.call <= view.upTo);
  const spent = Math.max(0, ...shown.map((n) => n.call.spent_tokens));
  const through = position === 0 ? "the prompt alone" : `through engine call ${calls[position - 1]}`;
  $("timeline-label").textContent = `step ${position}/${calls.length} · ${through} · ${spent} tokens spent`;
}

// --- one tree: its feed while it grows, then the stored tree ---

async function showTree(treeId) {
  $("viewer").hidden = false;
  $("title").textContent = treeId;
  const view = {model: new Model(), upTo: Infinity, selected: null, question: ""};
  const redraw = (follow) => { setTimeline(view, follow); draw(view); };
  $("timeline").addEventListener("input", () => redraw(false));
  const response = await api(`/v1/search/trees/${treeId}/events`);
  if (!response.ok) return failed(response);
  document.body.dataset.state = "live";
  status("growing…");
  let stored = false;
  for await (const event of serverSentEvents(response)) {
    if (event.type === "start") {
      view.model = new Model();
      view.question = event.question || "";
      showPrompt(view, event.strategy, event.model);
    } else if (event.type === "progress") {
      (event.nodes || []).forEach((node) => view.model.add(node));
      (event.stats || []).forEach((stats) => view.model.stats(stats));
      status(`growing · ${view.model.nodes.size} nodes · ${event.completion_tokens} tokens · ${event.engine_calls} calls`);
      redraw(false);  // follows the growth unless the slider was moved back
    } else if (event.type === "done") {
      stored = event.stored !== false && !event.error;
      if (event.error) status(`the search failed (${event.error})`);
    }
  }
  if (!stored) {
    document.body.dataset.state = "done";
    return redraw(true);
  }
  const tree = await api(`/v1/search/trees/${treeId}`);
  if (!tree.ok) return failed(tree);
  const entry = await tree.json();
  view.model = Model.fromStored(entry);
  view.question = entry.question || "";
  showPrompt(view, entry.strategy, entry.model);
  $("answer").textContent = entry.answer ? entry.answer.text : "";
  status(`${view.model.nodes.size} nodes · ${entry.spent_tokens} tokens · ${entry.usage.engine_calls} engine calls` +
         (entry.truncated ? ` · truncated (${entry.truncated_reason})` : ""));
  redraw(true);
  document.body.dataset.state = "done";
}

function showPrompt(view, strategy, model) {
  const prompt = $("prompt");
  prompt.replaceChildren(el("b", {}, `${strategy || ""}${model ? ` · ${model}` : ""} · prompt: `), view.question);
}

async function failed(response) {
  let message = `${response.status}`;
  try {
    const {error} = await response.json();
    message = typeof error === "string" ? error : error.message;
  } catch (error) { /* not JSON */ }
  if (response.status !== 401) status(message);  // a 401 asks for the key instead
  document.body.dataset.state = "failed";
}

async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

// --- the index: recent trees of this server's store ---

async function showIndex() {
  $("index").hidden = false;
  const response = await api("/v1/search/trees");
  if (!response.ok) return failed(response);
  const body = $("trees").tBodies[0];
  const {data} = await response.json();
  for (const tree of data) {
    const row = el("tr", {"data-tree": tree.id});
    const link = el("a", {href: `/trees/${tree.id}`}, new Date(tree.created * 1000).toLocaleString());
    const cells = [link, tree.strategy, tree.model, short(tree.question || "", 120), tree.answer ?? "–",
                   `${tree.spent_tokens}${tree.truncated ? " (truncated)" : ""}`];
    for (const [i, cell] of cells.entries()) {
      const td = el("td", i === 3 ? {class: "question"} : {});
      td.append(cell);
      row.append(td);
    }
    body.append(row);
  }
  status(`${data.length} trees`);
  document.body.dataset.state = "done";
}

const match = location.pathname.match(/^\/trees\/(tree-[0-9a-f]+)\/?$/);
(match ? showTree(match[1]) : showIndex()).catch((error) => { status(`${error}`); document.body.dataset.state = "failed"; });
