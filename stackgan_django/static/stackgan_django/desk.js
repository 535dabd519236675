// The desk's few behaviours: a form is sent once (double clicks), single-key shortcuts, notes that a
// decision requires, and moving through the review queue with the keyboard. No framework needed.
(function () {
  "use strict";

  function typing(event) {
    var el = event.target;
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  // A form marked data-once disables its buttons once sent: a double click sends one POST.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-once")) return;
    var button = event.submitter;
    if (button && button.dataset.needsNote !== undefined) {
      var note = form.querySelector("textarea[name=note]");
      if (note && !note.value.trim()) {
        event.preventDefault();
        var error = document.getElementById("sg-note-error");
        if (error) { error.textContent = button.dataset.needsNote; error.hidden = false; }
        note.focus();
        return;
      }
    }
    if (form.dataset.sent) { event.preventDefault(); return; }
    form.dataset.sent = "1";
    if (button && button.name) {  // a disabled submitter is not sent; keep its value
      var hidden = document.createElement("input");
      hidden.type = "hidden"; hidden.name = button.name; hidden.value = button.value;
      form.appendChild(hidden);
    }
    setTimeout(function () {
      form.querySelectorAll("button, input[type=submit]").forEach(function (b) { b.disabled = true; });
    }, 0);
  });

  // Review desk list: j/k move, Enter/o open, x select.
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-desk-list] #result_list tbody tr")); }
  var current = -1;
  function highlight(index) {
    var all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row, i) { row.classList.toggle("sg-current", i === current); });
    all[current].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.metaKey) return;
    if (event.key === "Enter" && event.ctrlKey) {
      var send = document.querySelector("[data-key=Enter][data-ctrl]");
      if (send) { event.preventDefault(); send.click(); }
      return;
    }
    if (event.ctrlKey || typing(event)) return;
    if (rows().length && document.querySelector("[data-desk-list]")) {
      if (event.key === "j") { highlight(current + 1); event.preventDefault(); return; }
      if (event.key === "k") { highlight(current - 1); event.preventDefault(); return; }
      if ((event.key === "Enter" || event.key === "o") && current >= 0) {
        var link = rows()[current].querySelector("th a, td a"); if (link) { link.click(); event.preventDefault(); } return;
      }
      if (event.key === "x" && current >= 0) {
        var box = rows()[current].querySelector("input.action-select"); if (box) { box.click(); event.preventDefault(); } return;
      }
    }
    var target = document.querySelector('[data-key="' + CSS.escape(event.key) + '"]:not([data-ctrl])');
    if (target) { event.preventDefault(); target.click(); }
  });
})();
