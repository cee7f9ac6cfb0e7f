// Ferry's dashboard, with JavaScript on: forms that ask for confirmation ask, and a live page
// (<body data-live>) refreshes its content when the server's event stream says something
// changed (without JavaScript it reloads every 5 s).
"use strict";
document.addEventListener("submit", (e) => {
  const question = e.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) e.preventDefault();
});
// On a phone a table's rows become cards: each cell is labelled with its column's heading.
const cards = () => {
  for (const table of document.querySelectorAll("main table")) {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!names.length) continue;
    table.classList.add("cards");
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.children].forEach((cell, i) => { if (names[i]) cell.setAttribute("data-label", names[i]); });
    }
  }
};
// What the server sent for each refreshed part (labelled cells differ from it).
const served = {};
for (const sel of ["#main", "header nav"]) served[sel] = document.querySelector(sel)?.innerHTML;
cards();
(() => {
  if (!document.body.hasAttribute("data-live")) return;
  let busy = false, pressed = false;
  // A click under way (pressed, not yet released) must land on the element it started on.
  addEventListener("pointerdown", () => { pressed = true; }, true);
  for (const end of ["pointerup", "pointercancel"]) addEventListener(end, () => { pressed = false; }, true);
  // A form being filled in keeps what was typed: nothing is replaced while a field has the
  // focus or differs from what the server sent.
  const editing = () => {
    if (document.activeElement?.matches("#main input, #main select, #main textarea")) return true;
    return [...document.querySelectorAll("#main input, #main select, #main textarea")].some((f) =>
      f.type === "checkbox" || f.type === "radio" ? f.checked !== f.defaultChecked
        // A select without a `selected` option starts on its first.
        : f.tagName === "SELECT" ? f.selectedIndex !== Math.max(0, [...f.options].findIndex((o) => o.defaultSelected))
        : f.value !== f.defaultValue);
  };
  const refresh = async () => {
    // An operator reading an expanded error keeps it; so does one clicking or typing. What
    // holds the page back is shown on <body data-held> (for people debugging, and tests).
    const held = busy ? null : pressed ? "pressed" : editing() ? "editing"
      : document.querySelector("details[open]") ? "reading" : "";
    if (held === null) return;
    document.body.dataset.held = held;
    if (held) return;
    busy = true;
    try {
      const answer = await fetch(location.href, { headers: { accept: "text/html" } });
      if (answer.redirected || !answer.ok) { location.reload(); return; }
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      for (const sel of ["#main", "header nav"]) {
        const now = document.querySelector(sel), next = page.querySelector(sel);
        if (now && next && served[sel] !== next.innerHTML) {
          served[sel] = next.innerHTML;
          now.innerHTML = next.innerHTML;
        }
      }
      cards();
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
