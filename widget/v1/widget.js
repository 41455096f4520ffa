/* Paydial card widget loader: Maven.createPayment({ sessionId }).mount("#slot").
 *
 * Card data never touches this page: the form lives in a frame served by Paydial, and only
 * results come back, as postMessage events whose origin and source are checked on every message.
 */
(function (global) {
  "use strict";

  var SOURCE = "paydial";
  // The frame says "ready" once its form runs. Without it the frame did not load or was refused
  // (a CSP frame-ancestors block shows the browser's broken-frame page and tells the page nothing).
  var READY_TIMEOUT_MS = 15000; // nothing loaded at all
  var AFTER_LOAD_MS = 2000; // the frame loaded, but not as Paydial's form
  var UNAVAILABLE = {
    error_code: "frame_unavailable",
    error_message: "The payment form could not be loaded.",
  };
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
    this._readyTimeout = options.readyTimeout || READY_TIMEOUT_MS;
    this._listener = this._receive.bind(this);
    this._timer = null;
    this._settled = false; // the frame answered (ready or failure) or the wait gave up
    this.iframe = null;
  }

  Payment.prototype._wait = function (ms) {
    var self = this;
    clearTimeout(this._timer);
    this._timer = setTimeout(function () {
      if (!self._settled && self.iframe) {
        self._settled = true;
        self._onFailure(UNAVAILABLE);
      }
    }, ms);
  };

  Payment.prototype._settle = function () {
    this._settled = true;
    clearTimeout(this._timer);
  };

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
    var self = this;
    frame.addEventListener("load", function () {
      if (!self._settled) self._wait(Math.min(AFTER_LOAD_MS, self._readyTimeout));
    });
    slot.appendChild(frame);
    this._wait(this._readyTimeout);
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
    this._settle();
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
      this._settle();
      this._send("theme", this._config.theme);
      this._send("labels", this._config.labels);
      this._send("fields", this._config.fields);
      this._onReady();
    } else if (msg.type === "resize" && typeof msg.height === "number") {
      this.iframe.style.height = Math.max(0, Math.ceil(msg.height)) + "px";
    } else if (msg.type === "success" && msg.result) {
      this._onSuccess(msg.result);
    } else if (msg.type === "failure" && msg.error) {
      this._settle();
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
