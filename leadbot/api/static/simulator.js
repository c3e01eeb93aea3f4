// The WhatsApp simulator: plays the lead's phone against the real channel, one chat column per lead.
// Everything shown comes from the database through /simulator/api; what the lead types goes out as a signed
// Twilio webhook (server side). Time is the simulated clock of all processes ("Vorspulen" moves it).
"use strict";

const { el, api } = Leadbot;
const POLL_MS = 1000;
const STATE_MS = 10000;
const OPEN_STORAGE = "leadbot.simulator.open";
// WhatsApp's status icons as inline SVG (fixed markup, no user data): clock, ✓, ✓✓ (grey, blue when read), failed.
const CLOCK_ICON = '<svg viewBox="0 0 16 12" width="15" height="11"><circle cx="8" cy="6" r="4.6" fill="none" ' +
  'stroke="currentColor" stroke-width="1.3"/><path d="M8 3.4V6l1.8 1.2" fill="none" stroke="currentColor" ' +
  'stroke-width="1.3" stroke-linecap="round"/></svg>';
const CHECK_ICON = '<svg viewBox="0 0 16 12" width="15" height="11"><path d="M2.5 6.3l3 3 7-7.6" fill="none" ' +
  'stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>';
const DOUBLE_CHECK_ICON = '<svg viewBox="0 0 18 12" width="17" height="11"><path d="M1 6.3l3 3 7-7.6M7.8 8.6l.9.9 ' +
  '7-7.6" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>';
const FAILED_ICON = '<svg viewBox="0 0 12 12" width="12" height="12"><circle cx="6" cy="6" r="5.5" ' +
  'fill="currentColor"/><path d="M6 3v3.6M6 8.4v.3" stroke="#fff" stroke-width="1.5" stroke-linecap="round"/></svg>';
const TICKS = { pending: CLOCK_ICON, queued: CLOCK_ICON, sent: CHECK_ICON, delivered: DOUBLE_CHECK_ICON,
  read: DOUBLE_CHECK_ICON, failed: FAILED_ICON };
const STATUS_TITLES = { pending: "wird gesendet", queued: "in der Warteschlange", sent: "gesendet",
  delivered: "zugestellt", read: "gelesen", failed: "fehlgeschlagen" };
const TASK_LABELS = {
  welcome: "Willkommensnachricht", nudge_30m: "Nudge", followup_24h: "Follow-up 24 h", followup_48h: "Follow-up 48 h",
  reminder_22h: "Reminder 22 h", reminder_55m: "Reminder 55 min", reminder_5m: "Reminder 5 min",
  handover_sla: "Handover-SLA-Check",
};

const clock = { serverNow: null, fetchedAt: 0, offset: 0, timeZone: "Europe/Berlin" };
const columns = new Map(); // contact id -> column state

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? `Fehler: ${error.message}` : "";
  box.hidden = !error;
}

function simulatedNow() {
  return clock.serverNow === null ? new Date() : new Date(clock.serverNow + (performance.now() - clock.fetchedAt));
}

function format(date, timeZone, options) {
  return new Intl.DateTimeFormat("de-DE", { timeZone, ...options }).format(date);
}

const timeOf = (date, timeZone) => format(date, timeZone, { hour: "2-digit", minute: "2-digit" });
const dayOf = (date, timeZone) => format(date, timeZone, { weekday: "long", day: "numeric", month: "long", year: "numeric" });

function offsetText(seconds) {
  if (!seconds) return "";
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.round((seconds % 3600) / 60);
  const parts = [days && `${days} T`, hours && `${hours} h`, minutes && `${minutes} min`].filter(Boolean);
  return `(vorgespult: +${parts.join(" ") || "< 1 min"})`;
}

function applyState(state) {
  clock.serverNow = Date.parse(state.now);
  clock.fetchedAt = performance.now();
  clock.offset = state.offset_seconds;
  clock.timeZone = state.default_timezone;
  document.getElementById("mode").textContent = state.sandbox ? "Sandbox (ohne Twilio)" : "Twilio – echte Nachrichten!";
  document.getElementById("sim-offset").textContent = offsetText(state.offset_seconds);
  for (const button of document.querySelectorAll("#skip button")) {
    button.disabled = !state.time_travel;
    if (!state.time_travel) button.title = "Zeitreise braucht LEADBOT_CLOCK_OFFSET_FILE";
  }
  renderClock();
}

function renderClock() {
  const current = simulatedNow();
  document.getElementById("sim-time").textContent = format(current, clock.timeZone,
    { weekday: "short", day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  for (const column of columns.values()) {
    if (column.contact) {
      column.localTime.textContent = `Ortszeit ${timeOf(current, column.contact.timezone)} (${column.contact.timezone})`;
    }
  }
}

async function loadState() {
  applyState(await api("/simulator/api/state"));
}

async function skipAhead(seconds) {
  try {
    applyState(await api("/simulator/api/clock/advance", { method: "POST", body: { seconds: Math.round(seconds) } }));
    showError(null);
  } catch (error) {
    showError(error);
  }
}

// --- WhatsApp text formatting (*fett*, _kursiv_, ~durch~, links), on escaped text only ----------------------

function formatted(text) {
  const escaped = text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const html = escaped
    .replace(/(https?:\/\/[^\s<]+)/g, '<a href="$1" target="_blank" rel="noopener">$1</a>')
    .replace(/(^|[\s(])\*([^*\n]+)\*(?=$|[\s.,!?:;)])/gm, "$1<strong>$2</strong>")
    .replace(/(^|[\s(])_([^_\n]+)_(?=$|[\s.,!?:;)])/gm, "$1<em>$2</em>")
    .replace(/(^|[\s(])~([^~\n]+)~(?=$|[\s.,!?:;)])/gm, "$1<del>$2</del>");
  const span = el("span", { class: "text" });
  span.innerHTML = html;
  return span;
}

// --- Messages -----------------------------------------------------------------------------------------------

function shownAt(message) {
  return new Date(message.sent_at || message.created_at);
}

function ticks(status, title) {
  const span = el("span", { class: "ticks", "data-status": status, title: title || STATUS_TITLES[status] || status });
  span.innerHTML = TICKS[status] || "";
  return span;
}

function leadStatus(message) {
  // The lead's own message: delivered once the channel stored it, read (blue) once the bot's turn ran.
  return message.processed ? "read" : "delivered";
}

function renderMessage(column, message) {
  const tz = column.contact.timezone;
  if (message.direction === "outbound" && message.delivery_status === "failed" && !message.sent_at) {
    return el("div", { class: "system-note failed", "data-message-id": message.id },
      `Nicht gesendet (${message.error_code || "Fehler"}): `, (message.content || "").slice(0, 120));
  }
  const bot = message.direction === "outbound";
  const queued = bot && message.delivery_status === "queued";
  const meta = el("span", { class: "meta" });
  if (message.template_name) meta.append(el("span", { class: "template" }, `Vorlage ${message.template_name}`));
  if (queued && message.send_at && Date.parse(message.send_at) > simulatedNow().getTime() + 1000) {
    meta.append(el("span", {}, `geplant ${timeOf(new Date(message.send_at), tz)}`));
  } else {
    meta.append(el("span", { class: "time" }, timeOf(shownAt(message), tz)));
  }
  meta.append(bot ? ticks(message.delivery_status, message.error_code) : ticks(leadStatus(message)));
  // A team member's reply during a handover (inbound rows carry the lead's role, never labelled).
  const label = bot && message.sender_role === "human" ? el("div", { class: "label" }, "Team") : null;
  const body = message.content ? formatted(message.content) : null;
  const media = message.media_url ? el("a", { class: "media", href: message.media_url, target: "_blank" }, "📎 Anhang") : null;
  const row = el("div", { class: `row ${bot ? "bot" : "lead"}${queued ? " queued" : ""}`, "data-message-id": message.id,
    "data-status": bot ? message.delivery_status : leadStatus(message) },
    el("div", { class: "bubble" }, label, media, body, meta));
  if (bot && message.buttons.length) {
    row.append(el("div", { class: "buttons" }, message.buttons.map((button) => el("button", {
      type: "button", class: "quick-reply", "data-payload": button.payload,
      onclick: () => sendInbound(column, { button_payload: button.payload, button_text: button.title }, button.title),
    }, button.title))));
  }
  return row;
}

function appendToChat(column, node, date) {
  const day = dayOf(date, column.contact.timezone);
  if (day !== column.lastDay) {
    column.body.append(el("div", { class: "day" }, day));
    column.lastDay = day;
  }
  column.body.append(node);
}

function scrollToEnd(column) {
  column.body.scrollTop = column.body.scrollHeight;
}

function addMessage(column, message) {
  if (message.message_sid && column.pending.has(message.message_sid)) {
    column.pending.get(message.message_sid).remove();
    column.pending.delete(message.message_sid);
  }
  const node = renderMessage(column, message);
  column.messages.set(message.id, { message, node });
  appendToChat(column, node, shownAt(message));
}

function applyUpdate(column, update) {
  const entry = column.messages.get(update.id);
  if (!entry) return;
  const old = entry.message;
  if (old.delivery_status === update.delivery_status && old.processed === update.processed
      && old.sent_at === update.sent_at) return;
  entry.message = { ...old, ...update };
  const node = renderMessage(column, entry.message);
  entry.node.replaceWith(node);
  entry.node = node;
}

function renderPendingTasks(column, tasks) {
  const box = column.tasks;
  box.hidden = !tasks.length;
  if (!tasks.length) return;
  const next = tasks[0];
  const runAt = new Date(next.run_at);
  const inSeconds = (runAt.getTime() - simulatedNow().getTime()) / 1000;
  const rest = tasks.length > 1 ? ` (+${tasks.length - 1} weitere)` : "";
  box.replaceChildren(
    `⏰ Geplant: ${TASK_LABELS[next.task_type] || next.task_type} um ${timeOf(runAt, column.contact.timezone)}${rest}`,
    inSeconds > 0 ? el("button", { type: "button", class: "skip-to-task",
      onclick: () => skipAhead(inSeconds + 2) }, "⏩ bis dahin vorspulen") : " – fällig, läuft gleich");
}

async function markRead(column) {
  if (document.visibilityState !== "visible") return;
  const ids = [...column.messages.values()]
    .filter(({ message }) => message.direction === "outbound" && message.delivery_status === "delivered"
      && !column.readRequested.has(message.id))
    .map(({ message }) => message.id);
  if (!ids.length) return;
  ids.forEach((id) => column.readRequested.add(id));
  await api("/simulator/api/read", { method: "POST", body: { contact_id: column.contactId, message_ids: ids } });
}

async function poll(column) {
  const data = await api(`/simulator/api/conversations/${column.contactId}/messages?after=${column.lastId}`);
  if (!columns.has(column.contactId) || column.sending) return; // closed meanwhile, or a send will match its bubble
  if (!column.contact) {
    column.contact = data.contact;
    column.name.textContent = data.contact.first_name || data.contact.whatsapp_e164;
    column.avatar.textContent = (data.contact.first_name || "#").slice(0, 1).toUpperCase();
    column.number.textContent = data.contact.whatsapp_e164;
    renderClock();
  }
  data.updates.forEach((update) => applyUpdate(column, update));
  const nearEnd = column.body.scrollHeight - column.body.scrollTop - column.body.clientHeight < 80;
  for (const message of data.messages) {
    addMessage(column, message);
    column.lastId = Math.max(column.lastId, message.id);
  }
  if (data.messages.length && (nearEnd || column.firstLoad)) scrollToEnd(column);
  column.firstLoad = false;
  renderPendingTasks(column, data.pending_tasks);
  column.element.dataset.loaded = "true";
  await markRead(column);
}

async function sendInbound(column, payload, shownText) {
  if (!column.contact) return;
  const pendingNode = el("div", { class: "row lead", "data-status": "pending" },
    el("div", { class: "bubble" }, formatted(shownText),
      el("span", { class: "meta" }, el("span", { class: "time" }, timeOf(simulatedNow(), column.contact.timezone)),
        ticks("pending"))));
  appendToChat(column, pendingNode, simulatedNow());
  scrollToEnd(column);
  column.sending += 1;
  try {
    const result = await api("/simulator/api/send", { method: "POST", body: { contact_id: column.contactId, ...payload } });
    column.pending.set(result.message_sid, pendingNode);
    showError(null);
  } catch (error) {
    pendingNode.querySelector(".ticks").replaceWith(ticks("failed", error.message));
    showError(error);
  } finally {
    column.sending -= 1;
  }
}

// --- Columns ------------------------------------------------------------------------------------------------

function saveOpenColumns() {
  localStorage.setItem(OPEN_STORAGE, JSON.stringify([...columns.keys()]));
}

function openColumn(contactId) {
  if (columns.has(contactId)) {
    columns.get(contactId).element.scrollIntoView({ behavior: "smooth", inline: "nearest" });
    return;
  }
  const column = {
    contactId, contact: null, lastId: 0, lastDay: null, messages: new Map(), pending: new Map(),
    readRequested: new Set(), sending: 0, firstLoad: true,
  };
  column.avatar = el("div", { class: "avatar" }, "#");
  column.name = el("div", { class: "name" }, `Kontakt #${contactId}`);
  column.number = el("span", {});
  column.localTime = el("span", {});
  column.body = el("div", { class: "chat-body" });
  column.tasks = el("div", { class: "pending-tasks", hidden: true });
  const input = el("input", { type: "text", placeholder: "Nachricht", autocomplete: "off", "aria-label": "Nachricht" });
  const composer = el("form", { class: "composer" }, input, el("button", { type: "submit", title: "Senden" }, "➤"));
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    sendInbound(column, { text }, text);
  });
  const close = el("button", { type: "button", class: "close", title: "Chat schließen",
    onclick: () => closeColumn(column) }, "×");
  column.element = el("section", { class: "chat", "data-contact": contactId },
    el("header", { class: "chat-head" }, column.avatar,
      el("div", { class: "who" }, column.name, el("div", { class: "sub" }, column.number),
        el("div", { class: "sub" }, column.localTime)), close),
    column.body, column.tasks, composer);
  document.getElementById("chats").append(column.element);
  document.getElementById("no-chats").hidden = true;
  columns.set(contactId, column);
  saveOpenColumns();
  poll(column).catch((error) => (error.status === 404 ? closeColumn(column) : showError(error)));
}

async function loadLeads() {
  const contacts = await api("/simulator/api/contacts");
  document.getElementById("lead-list").replaceChildren(...contacts.map((contact) =>
    el("li", { "data-contact": contact.id, onclick: () => openColumn(contact.id) },
      el("div", { class: "avatar" }, (contact.first_name || "#").slice(0, 1).toUpperCase()),
      el("div", {}, el("div", {}, contact.first_name || `Kontakt #${contact.id}`),
        el("div", { class: "lead-sub" }, `${contact.whatsapp_e164} · ${contact.timezone}`,
          contact.consent_status === "revoked" ? " · abgemeldet" : "")))));
}

function randomNumber() {
  // A valid German mobile number (0151 + 8 digits) so several test leads are one click each.
  return `+49151${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}`;
}

document.getElementById("optin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    const result = await api("/simulator/api/leads", { method: "POST", body: {
      first_name: form.first_name.value.trim() || null,
      whatsapp_e164: form.whatsapp_e164.value.trim(),
      timezone: form.timezone.value.trim() || "Europe/Berlin",
    } });
    showError(null);
    form.first_name.value = "";
    form.whatsapp_e164.value = randomNumber();
    openColumn(result.contact.id);
    await loadLeads();
  } catch (error) {
    showError(error);
  }
});

for (const button of document.querySelectorAll("#skip > button")) {
  button.addEventListener("click", () => skipAhead(Number(button.dataset.seconds)));
}
document.getElementById("skip-custom").addEventListener("submit", (event) => {
  event.preventDefault();
  const minutes = Number(document.getElementById("skip-minutes").value);
  if (minutes > 0) skipAhead(minutes * 60);
});

function closeColumn(column) {
  columns.delete(column.contactId);
  column.element.remove();
  saveOpenColumns();
  document.getElementById("no-chats").hidden = columns.size > 0;
}

async function pollAll() {
  for (const column of [...columns.values()]) {
    try {
      await poll(column);
    } catch (error) {
      if (error.status === 404) closeColumn(column); // the contact was deleted (DSGVO) or the database reset
      else showError(error);
    }
  }
  setTimeout(pollAll, POLL_MS);
}

async function start() {
  document.getElementById("optin-number").value = randomNumber();
  await loadState();
  await loadLeads();
  for (const id of JSON.parse(localStorage.getItem(OPEN_STORAGE) || "[]")) openColumn(id);
  setInterval(renderClock, 1000);
  setInterval(() => loadState().catch(showError), STATE_MS);
  setTimeout(pollAll, POLL_MS);
  document.body.dataset.ready = "true";
}

start().catch(showError);
