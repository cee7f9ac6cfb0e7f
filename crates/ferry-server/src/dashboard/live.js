// Ferry's dashboard, with JavaScript on: a live page refreshes its content when the server's
// event stream says something changed (without JavaScript it reloads every 5 s), and forms
// that ask for confirmation ask.
"use strict";
document.addEventListener("submit", (e) => {
  const question = e.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) e.preventDefault();
});
(() => {
  let busy = false;
  const refresh = async () => {
    // An operator reading an expanded error keeps it.
    if (busy || document.querySelector("details[open]")) return;
    busy = true;
    try {
      const answer = await fetch(location.href, { headers: { accept: "text/html" } });
      if (answer.redirected || !answer.ok) { location.reload(); return; }
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      for (const sel of ["#main", "header nav"]) {
        const now = document.querySelector(sel), next = page.querySelector(sel);
        if (now && next && now.innerHTML !== next.innerHTML) now.innerHTML = next.innerHTML;
      }
    } catch (_) {
      // The server is away: the stream reconnects by itself, and so does the next refresh.
    } finally {
      busy = false;
    }
  };
  const events = new EventSource("/admin/events");
  events.addEventListener("change", refresh);
  events.addEventListener("tick", refresh);
  // A page showing work under way (a running full sync) asks for a refresh every second.
  setInterval(() => { if (document.querySelector("#main [data-refresh]")) refresh(); }, 1000);
})();
