// Ferry's page: live updates. The server sends an event "change" (see
// /events) when the node's state or a record changed; the page is then
// fetched again and every element marked data-live is replaced by its new
// version, except one the user is typing in. Without JavaScript the page
// works the same, updated by reloading.
(function () {
  "use strict";
  var root = document.documentElement;
  var state = document.getElementById("live-state");
  var updates = 0, timer = null, busy = false;

  function say(text, live) {
    root.setAttribute("data-live-state", live);
    if (state) state.textContent = "Live updates: " + text;
  }

  function refresh() {
    timer = null;
    if (busy) { timer = setTimeout(refresh, 300); return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Ferry-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh) return;
          var a = document.activeElement;
          if (a && el.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) return;
          el.replaceWith(document.importNode(fresh, true));
        });
        updates++;
        root.setAttribute("data-live-updates", String(updates));
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }

  if (window.EventSource) {
    var es = new EventSource("/events");
    var hellos = 0;
    es.addEventListener("hello", function () {
      say("on", "on");
      // After a reconnection, catch up on what changed meanwhile.
      if (hellos++ > 0 && !timer) timer = setTimeout(refresh, 100);
    });
    es.addEventListener("change", function () {
      if (!timer) timer = setTimeout(refresh, 100);
    });
    es.onerror = function () { say("reconnecting…", "off"); };
  }

  // Forms that ask first (revoke).
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
})();
