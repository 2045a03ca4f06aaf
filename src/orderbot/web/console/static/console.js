// orderbot console: the only script (CSP: script-src 'self'). Pages work without it; it adds
// the live board (new orders appear without a reload, with a count in the tab title), the live
// conversation (new messages appear as they are logged) and confirmation of destructive forms.
(function () {
  "use strict";
  var POLL_MS = 1500;

  function liveBoard() {
    var table = document.getElementById("orders");
    if (!table || table.dataset.live !== "on") return;
    var body = table.tBodies[0];
    var notice = document.getElementById("new-orders");
    var baseTitle = document.title;
    var unseen = 0;

    function seen() {
      unseen = 0;
      document.title = baseTitle;
      if (notice) notice.hidden = true;
    }

    function poll() {
      var url = "/console/orders/new?after=" + encodeURIComponent(table.dataset.newest || "0");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (data) {
          if (!data || !data.count) return;
          // The rows are rendered (and escaped) by the server's template.
          var holder = document.createElement("tbody");
          holder.innerHTML = data.html;
          var rows = Array.prototype.slice.call(holder.rows);
          for (var i = rows.length - 1; i >= 0; i--) {
            rows[i].classList.add("fresh");
            body.insertBefore(rows[i], body.firstChild);
          }
          table.dataset.newest = String(data.newest);
          unseen += data.count;
          document.title = "(" + unseen + ") " + baseTitle;
          if (notice) {
            notice.textContent = unseen + (unseen === 1 ? " new order" : " new orders");
            notice.hidden = false;
          }
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ })
        .then(function () { window.setTimeout(poll, POLL_MS); });
    }

    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") window.setTimeout(seen, 4000);
    });
    document.addEventListener("click", seen);
    window.setTimeout(poll, POLL_MS);
  }

  // An open conversation shows what the customer (or anyone) writes next without a reload.
  function liveConversation() {
    var list = document.getElementById("conversation");
    if (!list || !list.dataset.messages) return;
    var empty = document.getElementById("no-messages");

    function poll() {
      var url = list.dataset.messages + "?after=" + encodeURIComponent(list.dataset.last || "0");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data || !data.count) return;
          var holder = document.createElement("ol");
          holder.innerHTML = data.html;  // rendered and escaped by the server's template
          while (holder.firstElementChild) list.appendChild(holder.firstElementChild);
          list.dataset.last = String(data.last);
          if (empty) empty.hidden = true;
        })
        .catch(function () { /* the next poll tries again */ })
        .then(function () { window.setTimeout(poll, POLL_MS); });
    }

    window.setTimeout(poll, POLL_MS);
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveBoard();
    liveConversation();
    confirmations();
  });
})();
