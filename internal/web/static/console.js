// mica console. The only script: it refreshes in place the regions marked
// data-refresh="seconds" (the overview, the approvals queue), so a page
// left open stays current. It fetches the same page with the session's
// cookie and swaps the region's content for the fresh one. Every page
// works without it.
(function () {
  'use strict';
  var regions = document.querySelectorAll('[data-refresh]');
  Array.prototype.forEach.call(regions, function (el) {
    var seconds = Math.max(3, parseInt(el.getAttribute('data-refresh'), 10) || 30);
    var busy = false;
    setInterval(function () {
      // Not while hidden, nor while someone is typing or choosing in it.
      if (busy || document.hidden || (el.contains(document.activeElement) && document.activeElement !== el)) {
        return;
      }
      busy = true;
      fetch(window.location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' }, redirect: 'manual' })
        .then(function (resp) { return resp.ok ? resp.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
          }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, seconds * 1000);
  });
})();
