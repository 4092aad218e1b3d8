// Reloads the overview every 10 s while the box is ticked and nobody is
// typing in the search box.
(function () {
  var box = document.getElementById("autorefresh");
  var q = document.getElementById("q");
  setInterval(function () {
    if (box && box.checked && document.activeElement !== q) {
      location.reload();
    }
  }, 10000);
})();
