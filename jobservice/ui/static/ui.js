// jobservice dashboard: the only script. It refreshes the live part of the page every few
// seconds (filters, forms and scroll stay as they are), shows times in the browser's time
// zone (UTC stays on hover), and asks before a removal. Without it every page still works.
(function () {
  "use strict";
  var body = document.body;
  var every = Number(body.getAttribute("data-refresh") || 0) * 1000;
  var lang = body.getAttribute("data-lang") || "en";

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var date = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(date.getTime())) {
        times[i].textContent = date.toLocaleString(lang, { dateStyle: "medium", timeStyle: "medium" });
      }
    }
  }

  function status(text) {
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function refresh() {
    var live = document.getElementById("live");
    if (!live || document.hidden) return;
    fetch(window.location.href, { headers: { "X-Jobservice-Live": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (!response.ok) { status(body.getAttribute("data-stale")); return null; }
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        live.innerHTML = html;
        localTimes(live);
        status(body.getAttribute("data-updated") + " " + new Date().toLocaleTimeString(lang));
      })
      .catch(function () { status(body.getAttribute("data-stale")); });
  }

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  localTimes(document);
  if (every > 0) window.setInterval(refresh, every);
})();
