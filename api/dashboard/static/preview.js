/* The settings page's live preview: the real card frame for a test session (mounted with the
 * widget's own loader), told the form's theme, labels and fields whenever they change, before
 * anything is saved. A cleared theme value falls back to the palette's default (theme.css, which
 * this page shares with the frame); a cleared label to the default shown as its placeholder. */
(function () {
  "use strict";

  var slot = document.getElementById("preview");
  var form = document.querySelector("form.settings");
  if (!slot || !form || !window.Paydial) {
    return;
  }
  var defaults = getComputedStyle(document.documentElement);

  function inputs(prefix) {
    return Array.prototype.filter.call(form.elements, function (el) {
      return el.name && el.name.indexOf(prefix + ".") === 0;
    });
  }

  function keyOf(el) {
    return el.name.slice(el.name.indexOf(".") + 1);
  }

  function theme() {
    var values = {};
    inputs("theme").forEach(function (el) {
      var key = keyOf(el);
      values[key] = el.value.trim() || defaults.getPropertyValue("--pd-" + key.replace(/_/g, "-")).trim();
    });
    return values;
  }

  function labels() {
    var values = {};
    inputs("labels").forEach(function (el) {
      values[keyOf(el)] = el.value.trim() || el.placeholder;
    });
    return values;
  }

  function fields() {
    var values = {};
    inputs("fields").forEach(function (el) {
      values[keyOf(el)] = el.checked;
    });
    return values;
  }

  var payment = window.Paydial.createPayment({
    sessionId: slot.dataset.session,
    theme: theme(),
    labels: labels(),
    fields: fields(),
    onReady: function () {
      slot.dataset.ready = "true";
    },
  }).mount(slot);

  function update() {
    payment.updateTheme(theme());
    payment.updateLabels(labels());
    payment.updateFields(fields());
  }
  form.addEventListener("input", update);
  form.addEventListener("change", update);
})();
