// rung dashboard: live refresh and confirmed actions. Served by rung; nothing is fetched from elsewhere.
(function () {
  "use strict";
  var seen = null;
  var refresh = parseFloat(document.body.getAttribute("data-refresh") || "3") * 1000;
  var live = document.getElementById("live");

  function toast(text, bad) {
    var box = document.getElementById("toast");
    box.textContent = text;
    box.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { box.className = ""; }, 6000);
  }

  function swap() {
    return fetch(location.href, { headers: { "X-Rung-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) { document.getElementById("main").innerHTML = html; bind(); }
      });
  }

  function poll() {
    fetch("/api/state", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) {
        if (!state) { live.className = "live"; return; }
        live.className = "live on";
        if (seen !== null && state.event !== seen) { swap(); }
        seen = state.event;
      })
      .catch(function () { live.className = "live"; })
      .then(function () { setTimeout(poll, refresh); });
  }

  function act(button) {
    if (!window.confirm(button.getAttribute("data-confirm"))) { return; }
    var body = {};
    if (button.hasAttribute("data-version")) { body.version = parseInt(button.getAttribute("data-version"), 10); }
    button.disabled = true;
    fetch("/actions/" + encodeURIComponent(button.getAttribute("data-model")) + "/" + button.getAttribute("data-action"), {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
    }).then(function (res) {
      if (res.ok) { toast(res.data.message + " (recorded as " + res.data.actor + ")", false); swap(); }
      else if (res.status === 401 || res.status === 403) { toast(res.data.error + ": enter a deployer token (top right)", true); }
      else { toast(res.data.error || ("failed: " + res.status), true); }
    }).catch(function (err) { toast(String(err), true); })
      .then(function () { button.disabled = false; });
  }

  function bind() {
    var buttons = document.querySelectorAll("button.act");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].onclick = (function (b) { return function () { act(b); }; })(buttons[i]);
    }
  }

  bind();
  poll();
})();
