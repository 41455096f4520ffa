/* Paydial card widget loader: Maven.createPayment({ sessionId }).mount("#slot").
 *
 * Card data never touches this page: the form lives in a frame served by Paydial, and only
 * results come back, as postMessage events whose origin and source are checked on every message.
 */
(function (global) {
  "use strict";

  var SOURCE = "paydial";
  var scriptOrigin = (function () {
    var script = document.currentScript;
    try {
      return script && script.src ? new URL(script.src, document.baseURI).origin : null;
    } catch (e) {
      return null;
    }
  })();

  function noop() {}

  function originOf(url) {
    return new URL(url, document.baseURI).origin;
  }

  function Payment(options) {
    if (!options || typeof options.sessionId !== "string" || !options.sessionId) {
      throw new Error("Paydial: createPayment needs a sessionId");
    }
    var base = options.baseUrl || scriptOrigin;
    if (!base) {
      throw new Error("Paydial: pass baseUrl when the script is not loaded from Paydial");
    }
    this._origin = originOf(base);
    this._sessionId = options.sessionId;
    this._onReady = options.onReady || noop;
    this._onSuccess = options.onSuccess || noop;
    this._onFailure = options.onFailure || noop;
    this._config = { theme: options.theme, labels: options.labels, fields: options.fields };
    this._listener = this._receive.bind(this);
    this.iframe = null;
  }

  Payment.prototype.mount = function (target) {
    var slot = typeof target === "string" ? document.querySelector(target) : target;
    if (!slot) {
      throw new Error("Paydial: mount target not found");
    }
    if (this.iframe) {
      throw new Error("Paydial: already mounted");
    }
    var frame = document.createElement("iframe");
    frame.src =
      this._origin + "/widget/" + encodeURIComponent(this._sessionId) +
      "?origin=" + encodeURIComponent(window.location.origin);
    frame.title = "Secure card payment";
    frame.setAttribute("allow", "payment");
    frame.setAttribute("scrolling", "no");
    frame.style.border = "0";
    frame.style.width = "100%";
    frame.style.height = "360px";
    frame.style.display = "block";
    this.iframe = frame;
    window.addEventListener("message", this._listener);
    slot.appendChild(frame);
    return this;
  };

  Payment.prototype._send = function (type, payload) {
    if (this.iframe && this.iframe.contentWindow && payload) {
      this.iframe.contentWindow.postMessage(
        { source: SOURCE, type: type, value: payload }, this._origin
      );
    }
  };

  Payment.prototype.updateTheme = function (theme) {
    this._config.theme = theme;
    this._send("theme", theme);
  };

  Payment.prototype.updateLabels = function (labels) {
    this._config.labels = labels;
    this._send("labels", labels);
  };

  Payment.prototype.updateFields = function (fields) {
    this._config.fields = fields;
    this._send("fields", fields);
  };

  Payment.prototype.destroy = function () {
    window.removeEventListener("message", this._listener);
    if (this.iframe && this.iframe.parentNode) {
      this.iframe.parentNode.removeChild(this.iframe);
    }
    this.iframe = null;
  };

  Payment.prototype._receive = function (event) {
    if (!this.iframe || event.origin !== this._origin || event.source !== this.iframe.contentWindow) {
      return;
    }
    var msg = event.data;
    if (!msg || msg.source !== SOURCE || typeof msg.type !== "string") {
      return;
    }
    if (msg.type === "ready") {
      this._send("theme", this._config.theme);
      this._send("labels", this._config.labels);
      this._send("fields", this._config.fields);
      this._onReady();
    } else if (msg.type === "resize" && typeof msg.height === "number") {
      this.iframe.style.height = Math.max(0, Math.ceil(msg.height)) + "px";
    } else if (msg.type === "success" && msg.result) {
      this._onSuccess(msg.result);
    } else if (msg.type === "failure" && msg.error) {
      this._onFailure(msg.error);
    }
  };

  var api = {
    createPayment: function (options) {
      return new Payment(options);
    },
  };
  global.Maven = api;
  global.Paydial = api;
})(window);
