// baton dashboard: follows the server's rendered view over server-sent events, counts ages and
// soaks down between events, and sends actions as POSTs with the dashboard's action header.
"use strict";
(function () {
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");
  const connection = document.getElementById("connection");

  function duration(seconds) {
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m" + (seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h" + Math.floor((seconds % 3600) / 60) + "m";
  }

  // Ages and time left, recomputed in the page: the clock needs no request.
  function tick() {
    const now = Date.now();
    for (const time of document.querySelectorAll("time[data-relative]")) {
      const at = Date.parse(time.getAttribute("datetime"));
      if (Number.isNaN(at)) continue;
      const seconds = Math.max(0, Math.round((time.dataset.relative === "future" ? at - now : now - at) / 1000));
      time.textContent = time.dataset.relative === "future" ? (seconds > 0 ? "in " + duration(seconds) : "now") : duration(seconds);
    }
  }

  // Replaces the live region, keeping keyboard focus on the control that had it.
  function show(html) {
    const focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : "";
    live.innerHTML = html;
    tick();
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
  }

  const source = new EventSource(document.body.dataset.events);
  source.addEventListener("view", (event) => show(event.data));
  source.addEventListener("open", () => { connection.textContent = "live"; });
  source.addEventListener("error", () => { connection.textContent = "reconnecting…"; });

  // Actions: a delegated click, so buttons that arrive with a new view work at once.
  live.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    notice.className = "";
    notice.textContent = "…";
    try {
      const response = await fetch(button.dataset.action, { method: "POST", headers: { "X-Baton-Action": "1" } });
      const text = await response.text();
      notice.className = response.ok ? "done" : "refused";
      notice.textContent = text;
    } catch (error) {
      notice.className = "refused";
      notice.textContent = "the dashboard did not answer: " + error;
    } finally {
      button.disabled = false;
    }
  });

  setInterval(tick, 1000);
})();
