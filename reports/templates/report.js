// The report's one script (its SHA-256 is pinned in the page's CSP): the attention-map
// explorer and hover values on figures. It reads only the page; nothing is fetched.
(function () {
  "use strict";
  // Attention-map explorer: draws one stored attention row over its image, from the
  // JSON block #explorer-data.
  var root = document.getElementById("ex-root");
  var source = document.getElementById("explorer-data");
  if (!root || !source) return;
  var data = JSON.parse(source.textContent);
  function $(id) { return document.getElementById(id); }
  var layerSel = $("ex-layer"), headSel = $("ex-head"), imageSel = $("ex-image");
  var kindSel = $("ex-query"), rowIn = $("ex-row"), colIn = $("ex-col");
  var canvas = $("ex-canvas"), out = $("ex-readout");
  var ctx = canvas.getContext("2d");
  var cache = {};
  var pictures = data.images.map(function (im) {
    var p = new Image();
    p.onload = function () { draw(); };
    p.src = im.src;
    return p;
  });

  function option(sel, value, text) {
    var o = document.createElement("option");
    o.value = String(value);
    o.textContent = text;
    sel.appendChild(o);
  }
  function decode(b64) {
    var s = atob(b64), a = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  function rowsOf(li, ii) {
    var key = li + ":" + ii;
    if (!cache[key]) cache[key] = decode(data.layers[li].rows[ii]);
    return cache[key];
  }
  function clamp(v, n) { v = Math.round(+v || 0); return Math.max(0, Math.min(n - 1, v)); }
  function layer() { return data.layers[+layerSel.value]; }
  function centre(l, cell) {
    var r = Math.floor(cell / l.grid[1]), c = cell % l.grid[1];
    return [r, c, l.origin[0] + r * l.stride[0], l.origin[1] + c * l.stride[1]];
  }

  function fillHeads() {
    var l = layer(), keep = +headSel.value || 0;
    headSel.textContent = "";
    for (var h = 0; h < l.heads; h++) option(headSel, h, "head " + h);
    headSel.value = String(keep < l.heads ? keep : 0);
    kindSel.options[0].disabled = l.cls < 0;
    if (l.cls < 0) kindSel.value = "cell";
    rowIn.max = String(l.grid[0] - 1);
    rowIn.step = colIn.step = String(l.step);
    colIn.max = String(l.grid[1] - 1);
    rowIn.value = String(clamp(rowIn.value, l.grid[0]));
    colIn.value = String(clamp(colIn.value, l.grid[1]));
  }

  function queryRow(l) {
    if (kindSel.value === "cls") return l.cls;
    var r = clamp(rowIn.value, l.grid[0]), c = clamp(colIn.value, l.grid[1]);
    var best = -1, bestD = Infinity;
    for (var q = 0; q < l.queries.length; q++) {
      var cell = l.queries[q];
      if (cell < 0) continue;
      var dr = Math.floor(cell / l.grid[1]) - r, dc = (cell % l.grid[1]) - c;
      var d = dr * dr + dc * dc;
      if (d < bestD) { bestD = d; best = q; }
    }
    return best;
  }

  function draw() {
    var li = +layerSel.value, ii = +imageSel.value, h = +headSel.value;
    var l = data.layers[li], im = data.images[ii], pic = pictures[ii];
    canvas.width = im.width;
    canvas.height = im.height;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (pic.complete && pic.naturalWidth) {
      ctx.globalAlpha = 0.6;
      ctx.drawImage(pic, 0, 0, im.width, im.height);
      ctx.globalAlpha = 1;
    }
    var q = queryRow(l);
    if (q < 0) { out.textContent = "no stored query row"; return; }
    var keys = l.keys[l.key_set[q]], K = keys.length, Q = l.queries.length;
    var a = rowsOf(li, ii), base = (h * Q + q) * K, best = -1, bestV = -1;
    for (var k = 0; k < K; k++) {
      var cell = keys[k];
      if (cell < 0) continue;
      var v = a[base + k];
      if (v > bestV) { bestV = v; best = cell; }
      if (v === 0) continue;
      var p = centre(l, cell);
      ctx.fillStyle = "rgba(255, 80, 0, " + (0.9 * v / 255).toFixed(3) + ")";
      ctx.fillRect(p[3] - l.stride[1] / 2, p[2] - l.stride[0] / 2, l.stride[1], l.stride[0]);
    }
    var qc = l.queries[q], text = l.name + " · head " + h + " · image " + im.id + " · query ";
    var b = centre(l, best);
    if (qc >= 0) {
      var p0 = centre(l, qc);
      ctx.strokeStyle = "#00e5ff";
      ctx.lineWidth = 2;
      ctx.strokeRect(p0[3] - l.stride[1] / 2, p0[2] - l.stride[0] / 2, l.stride[1], l.stride[0]);
      var dist = Math.sqrt(Math.pow(b[2] - p0[2], 2) + Math.pow(b[3] - p0[3], 2));
      text += "token (" + p0[0] + ", " + p0[1] + ")";
      text += " · strongest key (" + b[0] + ", " + b[1] + "), " + dist.toFixed(0) + " px away";
    } else {
      text += "class token · strongest key (" + b[0] + ", " + b[1] + ")";
    }
    out.textContent = text;
    root.setAttribute("data-state", [li, h, ii, qc, best].join(","));
  }

  canvas.addEventListener("click", function (e) {
    var l = layer(), box = canvas.getBoundingClientRect();
    var x = (e.clientX - box.left) * canvas.width / box.width;
    var y = (e.clientY - box.top) * canvas.height / box.height;
    kindSel.value = "cell";
    rowIn.value = String(clamp((y - l.origin[0]) / l.stride[0], l.grid[0]));
    colIn.value = String(clamp((x - l.origin[1]) / l.stride[1], l.grid[1]));
    draw();
  });
  layerSel.addEventListener("change", function () { fillHeads(); draw(); });
  [headSel, imageSel, kindSel].forEach(function (el) { el.addEventListener("change", draw); });
  [rowIn, colIn].forEach(function (el) {
    el.addEventListener("input", function () { kindSel.value = "cell"; draw(); });
  });

  data.layers.forEach(function (l, i) { option(layerSel, i, l.name); });
  data.images.forEach(function (im, i) { option(imageSel, i, im.id); });
  root.hidden = false;
  fillHeads();
  draw();
})();

(function () {
  "use strict";
  // Hover values: each <img data-points> lists [x, y, label], x and y as fractions of
  // the image from its top-left corner; the nearest point within 12 px is shown.
  var figures = document.querySelectorAll("img[data-points]");
  if (!figures.length) return;
  var tip = document.createElement("div");
  tip.className = "hover-tip";
  tip.setAttribute("role", "status");
  tip.hidden = true;
  document.body.appendChild(tip);
  Array.prototype.forEach.call(figures, function (img) {
    var points = JSON.parse(img.getAttribute("data-points"));
    img.addEventListener("mousemove", function (e) {
      var box = img.getBoundingClientRect(), best = null, bestD = 144;
      var mx = e.clientX - box.left, my = e.clientY - box.top;
      for (var i = 0; i < points.length; i++) {
        var dx = points[i][0] * box.width - mx, dy = points[i][1] * box.height - my;
        var d = dx * dx + dy * dy;
        if (d < bestD) { bestD = d; best = points[i]; }
      }
      if (!best) { tip.hidden = true; img.removeAttribute("data-hovered"); return; }
      tip.textContent = best[2];
      tip.hidden = false;
      tip.style.left = (window.scrollX + box.left + best[0] * box.width + 10) + "px";
      tip.style.top = (window.scrollY + box.top + best[1] * box.height + 10) + "px";
      img.setAttribute("data-hovered", best[2]);
    });
    img.addEventListener("mouseleave", function () { tip.hidden = true; });
  });
})();
