/* Mounts the widget on /demo and shows the events it sends back. */
(function () {
  "use strict";
  var slot = document.getElementById("payment");
  var log = document.getElementById("events");
  var lines = [];

  function show(name, value) {
    lines.push(name + " " + JSON.stringify(value || {}, null, 2));
    log.textContent = lines.join("\n\n");
  }

  Paydial.createPayment({
    sessionId: slot.dataset.sessionId,
    onReady: function () { show("ready"); },
    onSuccess: function (result) { show("success", result); },
    onFailure: function (error) { show("failure", error); },
  }).mount(slot);
})();
