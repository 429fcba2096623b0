// Keyboard navigation for the review workspace. Loaded as a static file (the CSP forbids inline script); the
// pages work without it. j/k select rows or answers, Enter opens, n/p walk the queue, g jumps to the grade field.
(function () {
  "use strict";
  var items = [];
  var current = -1;

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }

  function select(i) {
    if (!items.length) return;
    i = Math.max(0, Math.min(items.length - 1, i));
    if (current >= 0 && items[current]) items[current].classList.remove("current");
    current = i;
    var item = items[current];
    item.classList.add("current");
    var link = item.tagName === "TR" ? item.querySelector("a") : null;
    (link || item).focus({ preventScroll: true });
    item.scrollIntoView({ block: "nearest" });
  }

  function follow(rel) {
    var a = document.querySelector('a[rel="' + rel + '"]');
    if (a) window.location.href = a.href;
  }

  function gradeField() {
    var scope = current >= 0 ? items[current] : document;
    var input = scope.querySelector(".grade-input") || document.querySelector(".grade-input");
    if (input) {
      input.focus();
      input.select();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    items = Array.prototype.slice.call(document.querySelectorAll("[data-nav-item]"));
    // After a save the page opens at the answer graded (#a-LINE): select it, so j moves on from there.
    if (window.location.hash) {
      var target = document.getElementById(window.location.hash.slice(1));
      var at = items.indexOf(target);
      if (at >= 0) select(at);
    }
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e.target)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    var help = document.getElementById("keys");
    switch (e.key) {
      case "j": case "ArrowDown":
        if (e.key === "ArrowDown" && current < 0) return;
        select(current + 1); break;
      case "k": case "ArrowUp":
        if (e.key === "ArrowUp" && current < 0) return;
        select(current - 1); break;
      case "n": follow("next"); break;
      case "p": follow("prev"); break;
      case "g": gradeField(); break;
      case "c": window.location.href = "/"; break;
      case "q": window.location.href = "/queue"; break;
      case "a": window.location.href = "/agreement"; break;
      case "?": if (help) help.hidden = !help.hidden; break;
      case "Escape": if (help) help.hidden = true; break;
      default: return;
    }
    e.preventDefault();
  });
})();
