// The ops dashboard: KPI tiles, funnel, daily trends, handover queue with hand-back, dead letters with replay.
// All data comes from API-key-protected JSON; charts are inline SVG drawn here (no chart library, no CDN).
"use strict";

const { el, api, percent, duration, dateTime } = Leadbot;
const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 30000;

// Each rate tile shows its numerator and denominator, as `leadbot.services.kpis` defines them.
const TILES = [
  { key: "reply_rate", label: "Reply-Rate", num: "replies", den: "first_contacts", unit: "Antworten / Erstkontakte" },
  { key: "qualification_rate", label: "Qualifizierungsquote", num: "qualified", den: "qualification_decided",
    unit: "qualifiziert / entschieden" },
  { key: "booking_rate", label: "Booking-Rate", num: "booked", den: "qualified", unit: "gebucht / qualifiziert" },
  { key: "show_up_rate", label: "Show-up-Rate", num: "attended", den: "appointments_with_outcome",
    unit: "erschienen / Termine mit Ergebnis" },
  { key: "opt_out_rate", label: "Opt-out-Rate", num: "opt_outs", den: "active_contacts",
    unit: "Abmeldungen / aktive Kontakte" },
  { key: "median_first_response_seconds", label: "Median Antwortzeit Bot", unit: "erster Inbound → Bot" },
  { key: "median_first_human_response_seconds", label: "Median Antwortzeit Team", unit: "Handover → erste Antwort" },
];

const FUNNEL_STAGES = [
  ["opted_in", "Opt-in"], ["replied", "Antwort"], ["qualified", "Qualifiziert"], ["booked", "Gebucht"],
  ["attended", "Erschienen"],
];

const CHARTS = [
  { title: "Erstkontakte / Antworten", series: ["first_contacts", "replies"], format: (v) => String(v) },
  { title: "Qualifiziert / gebucht", series: ["qualified", "booked"], format: (v) => String(v) },
  { title: "Reply-Rate", series: ["reply_rate"], rate: true },
  { title: "Qualifizierungsquote", series: ["qualification_rate"], rate: true },
  { title: "Opt-out-Rate", series: ["opt_out_rate"], rate: true },
  { title: "Median Antwortzeit Bot", series: ["median_first_response_seconds"], format: duration },
];

let timeZone = "Europe/Berlin";

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? `Fehler: ${error.message}` : "";
  box.hidden = !error;
}

function renderTiles(container, kpis) {
  container.replaceChildren(...TILES.map((tile) => {
    const value = kpis[tile.key];
    const isRate = Boolean(tile.num);
    const shown = isRate ? percent(value) : duration(value);
    const detail = isRate ? `${kpis[tile.num]} / ${kpis[tile.den]} ${tile.unit}` : tile.unit;
    return el("div", { class: "tile", "data-kpi": tile.key },
      el("div", { class: "label" }, tile.label),
      el("div", { class: "value", "data-value": value === null ? "" : String(value) }, shown),
      el("div", { class: "detail", ...(isRate ? { "data-numerator": kpis[tile.num],
        "data-denominator": kpis[tile.den] } : {}) }, detail));
  }));
}

function renderFunnel(data) {
  const top = data.opted_in || 0;
  const rows = FUNNEL_STAGES.map(([key, label], index) => {
    const count = data[key];
    const previous = index === 0 ? null : data[FUNNEL_STAGES[index - 1][0]];
    const width = top ? (100 * count) / top : 0;
    const rate = index === 0 ? "Kohorte" : `${percent(previous ? count / previous : null)} der Vorstufe`;
    return el("div", { class: "funnel-row", "data-stage": key },
      el("div", {}, label, " ", el("span", { class: "funnel-count" }, count)),
      el("div", { class: "funnel-bar" }, el("div", { style: `width:${width}%` })),
      el("div", { class: "funnel-rate" }, rate));
  });
  document.getElementById("funnel").replaceChildren(...rows);
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function barChart(chart, days) {
  const width = 260, height = 120, left = 34, bottom = 16, top = 8;
  const plotW = width - left - 4, plotH = height - top - bottom;
  const values = days.map((day) => chart.series.map((key) => day[key]));
  const format = chart.rate ? percent : chart.format;
  const max = chart.rate ? 1 : Math.max(1, ...values.flat().filter((v) => v !== null));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": chart.title });
  root.append(svg("line", { class: "axis", x1: left, x2: width - 4, y1: top + plotH, y2: top + plotH }));
  root.append(svg("text", { x: left - 4, y: top + 6, "text-anchor": "end" }, chart.rate ? "100 %" : format(max)));
  root.append(svg("text", { x: left - 4, y: top + plotH, "text-anchor": "end" }, chart.rate ? "0 %" : "0"));
  const slot = plotW / days.length;
  const barW = Math.max(1, (slot - 3) / chart.series.length);
  days.forEach((day, index) => {
    const x0 = left + index * slot + 1.5;
    values[index].forEach((value, series) => {
      const h = value === null ? 0 : (plotH * value) / max;
      const bar = svg("rect", { class: series ? "bar secondary" : "bar", x: x0 + series * barW, y: top + plotH - h,
        width: barW, height: Math.max(h, 0) });
      bar.append(svg("title", {}, `${day.day}: ${chart.series[series]} = ${format(value)}`));
      root.append(bar);
    });
    if (index % 2 === days.length % 2) {
      root.append(svg("text", { x: x0 + slot / 2 - 1.5, y: height - 4, "text-anchor": "middle" },
        day.day.slice(8, 10)));
    }
  });
  return el("div", { class: "chart" }, el("h3", {}, chart.title), root);
}

function renderTrends(data) {
  document.getElementById("trends").replaceChildren(...CHARTS.map((chart) => barChart(chart, data.days)));
}

async function act(button, action) {
  button.disabled = true;
  try {
    await action();
    showError(null);
  } catch (error) {
    showError(error);
  }
  await refreshing; // a load that started before the action would show the old state
  await refresh();
}

function renderHandovers(handovers) {
  document.getElementById("handover-count").textContent = handovers.length;
  const rows = handovers.map((handover) => {
    const button = el("button", { type: "button", class: "hand-back", "data-conversation": handover.conversation_id },
      "An Bot zurückgeben");
    button.addEventListener("click", () => act(button, () =>
      api(`/conversations/${handover.conversation_id}/hand-back`, { method: "POST" })));
    const status = handover.first_human_response_at ? "beantwortet"
      : handover.escalated_at ? el("span", { class: "escalated" }, "eskaliert") : "wartet";
    return el("tr", { "data-handover": handover.id },
      el("td", {}, handover.first_name || `Kontakt #${handover.contact_id}`),
      el("td", {}, handover.reason),
      el("td", {}, dateTime(handover.started_at, timeZone)),
      el("td", { class: handover.escalated_at ? "late" : "" }, duration(handover.waiting_seconds)),
      el("td", {}, status),
      el("td", {}, button));
  });
  const body = document.querySelector("#handovers tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "empty" },
    "Niemand wartet auf das Team."))]));
}

function reference(letter) {
  if (letter.message_id) return `Nachricht #${letter.message_id}`;
  if (letter.outbox_id) return `CRM-Outbox #${letter.outbox_id}`;
  if (letter.task_id) return `Task #${letter.task_id}`;
  return "–";
}

function renderDeadLetters(letters) {
  document.getElementById("dead-letter-count").textContent = letters.length;
  const rows = letters.map((letter) => {
    const button = el("button", { type: "button", class: "replay", "data-dead-letter": letter.id }, "Erneut einreihen");
    button.addEventListener("click", () => act(button, () =>
      api(`/dead-letters/${letter.id}/replay`, { method: "POST" })));
    return el("tr", { "data-dead-letter": letter.id },
      el("td", {}, letter.id), el("td", {}, letter.kind), el("td", {}, reference(letter)),
      el("td", {}, letter.reason), el("td", {}, letter.error_code || "–"), el("td", {}, letter.attempts),
      el("td", {}, dateTime(letter.created_at, timeZone)), el("td", {}, button));
  });
  const body = document.querySelector("#dead-letters tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "empty" },
    "Keine offenen Dead Letters."))]));
}

let refreshing = null;

async function load() {
  const days = document.getElementById("funnel-days").value;
  const [kpis, funnel, trends, handovers, letters] = await Promise.all([
    api("/dashboard/api/kpis"), api(`/dashboard/api/funnel?days=${days}`), api("/dashboard/api/trends?days=14"),
    api("/handovers?open=true"), api("/dead-letters"),
  ]);
  timeZone = kpis.timezone;
  document.getElementById("as-of").textContent = `Stand ${dateTime(kpis.now, timeZone)} (${timeZone})`;
  renderTiles(document.getElementById("tiles-today"), kpis.today);
  renderTiles(document.getElementById("tiles-week"), kpis.week);
  renderFunnel(funnel);
  renderTrends(trends);
  renderHandovers(handovers);
  renderDeadLetters(letters);
  document.body.dataset.loaded = "true";
}

function refresh() {
  // One load at a time: a slow answer must not overwrite a newer one.
  refreshing = refreshing || load().catch(showError).finally(() => { refreshing = null; });
  return refreshing;
}

document.getElementById("refresh").addEventListener("click", refresh);
document.getElementById("funnel-days").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
