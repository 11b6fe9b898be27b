// Conn bridge console: follow the ledger live with server-sent events. No framework, no
// inline script (CSP). The server renders every piece of HTML (escaped by Jinja2); this
// file only places it. EventSource reconnects by itself and sends Last-Event-ID.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  var serverNow = Date.parse(document.body.getAttribute("data-server-now") || "");
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();
  var pending = {};

  function say(text, state) {
    if (!status) return;
    status.textContent = text;
    status.setAttribute("data-state", state);
  }

  function formatAge(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 90) return s + " s";
    if (s < 5400) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function tickAges() {
    var now = Date.now() + skew;
    var nodes = document.querySelectorAll("[data-observed-at]");
    for (var i = 0; i < nodes.length; i++) {
      var t = Date.parse(nodes[i].getAttribute("data-observed-at"));
      if (!isNaN(t)) nodes[i].textContent = formatAge((now - t) / 1000);
    }
  }

  function place(id, html, hash) {
    var el = document.getElementById(id);
    if (!el || el.getAttribute("data-hash") === hash) return;
    if (el.contains(document.activeElement) && document.activeElement !== document.body) {
      // Never pull a form away from someone using it: apply when focus leaves the panel.
      pending[id] = { html: html, hash: hash };
      return;
    }
    el.innerHTML = html;  // server-rendered, escaped by the template engine
    el.setAttribute("data-hash", hash);
    delete pending[id];
  }

  document.addEventListener("focusout", function (ev) {
    window.setTimeout(function () {
      for (var id in pending) {
        var el = document.getElementById(id);
        if (el && !el.contains(document.activeElement)) place(id, pending[id].html, pending[id].hash);
      }
    }, 0);
  });

  function appendRows(rows) {
    var body = document.getElementById("ledger-rows");
    if (!body) return;
    var head = parseInt(main.getAttribute("data-head") || "0", 10);
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].seq <= head) continue;
      body.insertAdjacentHTML("beforeend", rows[i].html);
      var row = body.lastElementChild;
      if (row) row.classList.add("fresh");
      head = rows[i].seq;
    }
    main.setAttribute("data-head", String(head));
    var empty = document.getElementById("ledger-empty");
    if (empty && body.children.length) empty.hidden = true;
    if (rows.length) say("Live — last entry #" + head + " (" + rows[rows.length - 1].type + ")", "live");
  }

  function start() {
    var url = main && main.getAttribute("data-stream");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    source.addEventListener("open", function () { say("Live", "live"); });
    source.addEventListener("update", function (ev) {
      var data = JSON.parse(ev.data);
      if (data.rows) appendRows(data.rows);
      var panels = data.panels || {};
      for (var id in panels) place(id, panels[id].html, panels[id].hash);
    });
    source.addEventListener("signed-out", function () {
      source.close();
      say("Your session ended: sign in again to follow live.", "down");
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        say("Disconnected: reload the page to follow live.", "down");
      } else {
        say("Reconnecting…", "down");
      }
    });
  }

  tickAges();
  window.setInterval(tickAges, 1000);
  start();
})();
