// Shared by the ops dashboard and the WhatsApp simulator: the API key and JSON calls to the ops API.
// The key is asked once per browser tab and kept in sessionStorage (gone when the tab closes), never in a URL.
"use strict";

const Leadbot = (() => {
  const KEY_STORAGE = "leadbot.opsApiKey";
  let keyWaiters = [];

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function showKeyDialog(message) {
    let dialog = document.getElementById("api-key-dialog");
    if (!dialog) {
      const input = el("input", { id: "api-key-input", type: "password", autocomplete: "off",
        placeholder: "OPS_API_KEY", required: true });
      const form = el("form", { id: "api-key-form", class: "key-form" },
        el("h2", {}, "API-Schlüssel"),
        el("p", { id: "api-key-message" }),
        el("label", { for: "api-key-input" }, "OPS_API_KEY (steht bei scripts/run in var/ops_api_key)"),
        input,
        el("button", { type: "submit", id: "api-key-submit" }, "Anmelden"));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        sessionStorage.setItem(KEY_STORAGE, value);
        dialog.hidden = true;
        const waiters = keyWaiters;
        keyWaiters = [];
        waiters.forEach((resolve) => resolve(value));
      });
      dialog = el("div", { id: "api-key-dialog", class: "key-overlay" }, form);
      document.body.append(dialog);
    }
    document.getElementById("api-key-message").textContent =
      message || "Bitte den API-Schlüssel der Ops-API eingeben.";
    dialog.hidden = false;
    document.getElementById("api-key-input").focus();
  }

  // The key, asking for it when there is none; calls that arrive while the dialog is open wait for the same answer.
  function apiKey(message) {
    const stored = sessionStorage.getItem(KEY_STORAGE);
    if (stored) return Promise.resolve(stored);
    return new Promise((resolve) => {
      const asking = keyWaiters.length > 0;
      keyWaiters.push(resolve);
      if (!asking || message) showKeyDialog(message);
    });
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : JSON.stringify(detail));
      this.status = status;
      this.detail = detail;
    }
  }

  // JSON call with the API key; a rejected key (401/403) asks for it again and retries once it is entered.
  async function api(path, { method = "GET", body } = {}) {
    for (;;) {
      const key = await apiKey();
      const response = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 || response.status === 403) {
        // Only the first of several rejected calls says so; the others just wait for the new key.
        if (sessionStorage.getItem(KEY_STORAGE) === key) {
          sessionStorage.removeItem(KEY_STORAGE);
          await apiKey("Der API-Schlüssel wurde abgelehnt. Bitte erneut eingeben.");
        }
        continue;
      }
      const text = await response.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch { data = text; }
      if (!response.ok) throw new ApiError(response.status, (data && data.detail) || text || response.statusText);
      return data;
    }
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1).replace(".", ",")} %`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1).replace(".", ",")} h`;
  }

  function dateTime(iso, timeZone, options = {}) {
    return new Intl.DateTimeFormat("de-DE", { timeZone, dateStyle: "short", timeStyle: "short", ...options })
      .format(new Date(iso));
  }

  return { el, api, apiKey, ApiError, percent, duration, dateTime };
})();
