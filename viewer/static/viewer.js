/* One Blueprint web map: layer tree, legend and popups over vector tiles; tabs and start-up.
 *
 * Started by the page that folium builds: OneBlueprint.start(map, config). Every layer is drawn from
 * /tiles/{code}/{z}/{x}/{y}.pbf (Leaflet.VectorGrid). conflicts.js (conflict review) and site.js
 * (site check) add their panels to the same OneBlueprint namespace.
 */
(function () {
  "use strict";

  const OB = {};
  window.OneBlueprint = OB;

  // ---- small helpers ------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function fmtNumber(n, digits) {
    if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function fmtArea(m2) { return m2 === null || m2 === undefined ? "—" : fmtNumber(m2, 0) + " m²"; }
  function bilingual(item) { return item ? `${item.name_zh || ""} ${item.name_en || ""}`.trim() : ""; }

  /* fetch JSON; never throws: {ok, status, data, problem} (problem+json bodies become `problem`). */
  async function api(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      return { ok: false, status: 0, problem: { title: "网络错误 Network error", detail: String(err) } };
    }
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (response.status !== 204 && type.includes("json")) {
      try { body = await response.json(); } catch (err) { body = null; }
    }
    if (response.ok) return { ok: true, status: response.status, data: body };
    const problem = body && (body.title || body.detail) ? body
      : { title: `HTTP ${response.status}`, detail: response.statusText };
    return { ok: false, status: response.status, problem };
  }

  function problemNode(result, serviceName) {
    if (result.status === 404 && result.problem && result.problem.detail === "Not Found") {
      return el("p", { class: "bp-error" }, `${serviceName}尚不可用 — the service is not available on this server (HTTP 404).`);
    }
    const p = result.problem || {};
    return el("p", { class: "bp-error" }, el("strong", {}, p.title || "错误 Error"), " ", p.detail || "");
  }

  // ---- styles -------------------------------------------------------------------------------

  function schemeLookup(config) {
    const sorted = {};
    for (const [name, mapping] of Object.entries(config.schemes || {})) {
      sorted[name] = Object.keys(mapping).sort((a, b) => b.length - a.length).map((k) => [k, mapping[k]]);
    }
    return function unifiedClass(scheme, value) {
      if (value === undefined || value === null) return null;
      if (scheme === "unified") return String(value);
      const entries = sorted[scheme];
      if (!entries) return null;
      const text = String(value);
      for (const [prefix, cls] of entries) if (text.startsWith(prefix)) return cls;
      return null;
    };
  }

  function leafletStyle(minor, properties, state) {
    const s = minor.style || {};
    let fill = s.fill_color || s.color;
    const by = s.by_attribute;
    if (by && properties) {
      const cls = state.unifiedClass(by.classes, properties[by.field]);
      if (cls && state.config.unified_colors[cls]) fill = state.config.unified_colors[cls];
    }
    const polygon = minor.geometry_type === "polygon";
    return {
      color: s.color,
      weight: s.weight || (polygon ? 1 : 2),
      opacity: 0.9,
      dashArray: s.dash_array,
      fill: polygon || minor.geometry_type === "point",
      fillColor: fill,
      fillOpacity: s.fill_opacity === undefined ? (polygon ? 0.35 : 0.8) : s.fill_opacity,
      radius: s.radius || 4,
    };
  }

  // ---- layers -------------------------------------------------------------------------------

  function minors(config) {
    const out = [];
    for (const major of config.catalogue) {
      for (const middle of major.middles) {
        for (const minor of middle.minors) out.push(Object.assign({ major: major.code, middle: middle.code }, minor));
      }
    }
    return out;
  }

  function isDrawn(state, code) {
    const minor = state.minors[code];
    if (!minor || !state.config.versions[code] || !state.checked.has(code)) return false;
    if (code === state.config.blueprint_layer) return state.view === "blueprint";
    if (minor.major === state.config.plan_major) return state.view === "sources";
    return true;
  }

  function tileLayer(state, minor) {
    const version = state.config.versions[minor.code];
    const url = `/tiles/${minor.code}/{z}/{x}/{y}.pbf?v=${version.id}`;
    const style = {};
    style[minor.code] = (properties) => leafletStyle(minor, properties, state);
    const pane = minor.geometry_type === "point" ? "bp-points" : minor.geometry_type === "line" ? "bp-lines" : "bp-polygons";
    const outline = (minor.style || {}).fill_opacity === 0;
    return L.vectorGrid.protobuf(url, {
      vectorTileLayerStyles: style,
      rendererFactory: L.canvas.tile,
      interactive: false,
      maxNativeZoom: 22,
      maxZoom: 22,
      minZoom: version.min_zoom || 0,
      pane: pane,
      zIndex: state.order[minor.code] + (outline ? 1000 : 0),
      getFeatureId: (f) => f.id,
    });
  }

  function refreshLayers(state) {
    for (const minor of state.minorList) {
      const code = minor.code;
      const want = isDrawn(state, code);
      const have = state.tiles[code];
      if (want && !have) state.tiles[code] = tileLayer(state, minor).addTo(state.map);
      if (!want && have) { state.map.removeLayer(have); delete state.tiles[code]; }
      const box = document.querySelector(`input[data-code="${code}"]`);
      if (box) {
        const plan = minor.major === state.config.plan_major;
        const blocked = (plan && state.view === "blueprint") ||
          (code === state.config.blueprint_layer && state.view !== "blueprint");
        box.disabled = !state.config.versions[code] || blocked;
        box.closest("li").classList.toggle("bp-drawn", want);
      }
    }
    buildLegend(state);
  }

  function swatch(minor, fillColor) {
    const s = minor.style || {};
    const line = minor.geometry_type === "line";
    return el("span", {
      class: "bp-swatch" + (line ? " bp-swatch-line" : minor.geometry_type === "point" ? " bp-swatch-point" : ""),
      style: {
        background: line ? s.color : (s.fill_opacity === 0 ? "transparent" : (fillColor || s.fill_color || s.color)),
        borderColor: s.color,
        borderStyle: s.dash_array ? "dashed" : "solid",
      },
    });
  }

  function buildTree(state) {
    const tree = clear(document.getElementById("bp-tree"));
    for (const major of state.config.catalogue) {
      const middles = major.middles.map((middle) => {
        const items = middle.minors.map((minor) => {
          const version = state.config.versions[minor.code];
          const raster = minor.geometry_type === "raster";
          const box = el("input", {
            type: "checkbox", "data-code": minor.code, checked: state.checked.has(minor.code),
            disabled: !version, onchange: (ev) => {
              if (ev.target.checked) state.checked.add(minor.code); else state.checked.delete(minor.code);
              refreshLayers(state);
            },
          });
          const note = raster ? "栅格 raster" : !version ? "未加载 not loaded"
            : `${fmtNumber(version.features)} · v${version.version}` + (version.min_zoom ? ` · z≥${version.min_zoom}` : "");
          return el("li", { class: version ? "" : "bp-empty" },
            el("label", {}, box, swatch(minor),
              el("span", { class: "bp-code" }, minor.code), " ", minor.name_zh, " ",
              el("span", { class: "bp-en" }, minor.name_en), " ", el("span", { class: "bp-count" }, note)));
        });
        const loaded = middle.minors.filter((m) => state.config.versions[m.code]).length;
        return el("details", { open: loaded > 0 },
          el("summary", {}, el("span", { class: "bp-code" }, middle.code), " ", bilingual(middle),
            el("span", { class: "bp-count" }, ` ${loaded}/${middle.minors.length}`)),
          el("ul", {}, items));
      });
      tree.append(el("details", { class: "bp-major", open: true },
        el("summary", {}, el("span", { class: "bp-code" }, major.code), " ", bilingual(major)), middles));
    }
  }

  function buildLegend(state) {
    const legend = clear(document.getElementById("bp-legend"));
    const drawn = state.minorList.filter((m) => state.tiles[m.code]);
    if (!drawn.length) { legend.append(el("p", { class: "bp-note" }, "未显示图层 No layer shown")); return; }
    for (const minor of drawn) {
      const by = (minor.style || {}).by_attribute;
      const row = el("div", { class: "bp-legend-row" }, swatch(minor), `${minor.name_zh} ${minor.name_en}`);
      legend.append(row);
      if (by && (by.classes === "unified" || (state.config.schemes || {})[by.classes])) {
        const classes = el("div", { class: "bp-legend-classes" });
        for (const [cls, color] of Object.entries(state.config.unified_colors)) {
          classes.append(el("span", { class: "bp-legend-class" }, swatch(minor, color), state.config.unified_names[cls] || cls));
        }
        legend.append(classes);
      }
    }
  }

  function setupViewSwitch(state) {
    const hasBlueprint = Boolean(state.config.versions[state.config.blueprint_layer]);
    state.view = hasBlueprint ? "blueprint" : "sources";
    for (const radio of document.querySelectorAll('input[name="bp-view"]')) {
      radio.checked = radio.value === state.view;
      if (radio.value === "blueprint" && !hasBlueprint) {
        radio.disabled = true;
        radio.parentElement.append(el("span", { class: "bp-count" }, " 未生成 not built"));
      }
      radio.addEventListener("change", () => { state.view = radio.value; refreshLayers(state); });
    }
  }

  // ---- popups -------------------------------------------------------------------------------

  function attributeTable(minor, properties) {
    const rows = [];
    const names = ["fid"].concat(minor.attributes || []);
    for (const key of Object.keys(properties)) if (!names.includes(key)) names.push(key);
    for (const key of names) {
      if (properties[key] === undefined) continue;
      rows.push(el("tr", {}, el("th", {}, key), el("td", {}, properties[key] === null ? "—" : String(properties[key]))));
    }
    return el("table", { class: "bp-attrs" }, rows);
  }

  function setupPopups(state) {
    state.map.on("click", async (ev) => {
      if (state.drawing) return;
      const codes = state.minorList.filter((m) => state.tiles[m.code]).map((m) => m.code).reverse().slice(0, 12);
      if (!codes.length) return;
      const metresPerPixel = 40075016.686 * Math.cos(ev.latlng.lat * Math.PI / 180) / Math.pow(2, state.map.getZoom() + 8);
      const tolerance = Math.min(5000, 4 * metresPerPixel);
      const popup = L.popup({ maxWidth: 360, maxHeight: 320 }).setLatLng(ev.latlng)
        .setContent("查询中… Looking up…").openOn(state.map);
      const results = await Promise.all(codes.map((code) => api(
        `/api/v1/layers/${code}/features?lon=${ev.latlng.lng.toFixed(7)}&lat=${ev.latlng.lat.toFixed(7)}` +
        `&tolerance_m=${tolerance.toFixed(2)}&limit=3&geometry=false`)));
      const body = el("div", { class: "bp-popup" });
      results.forEach((result, i) => {
        if (!result.ok || !result.data.features.length) return;
        const minor = state.minors[codes[i]];
        body.append(el("h3", {}, `${minor.name_zh} ${minor.name_en} `, el("small", {}, minor.code)));
        for (const feature of result.data.features) body.append(attributeTable(minor, feature.properties));
      });
      if (!body.childNodes.length) body.append(el("p", {}, "此处无要素 No feature here"));
      popup.setContent(body);
    });
  }


  // Shared with conflicts.js and site.js (loaded after this file).
  Object.assign(OB, { el, clear, fmtNumber, fmtArea, bilingual, api, problemNode, attributeTable });

  // ---- tabs and start -----------------------------------------------------------------------

  function selectTab(state, name) {
    for (const button of document.querySelectorAll(".bp-tabs button")) button.classList.toggle("bp-active", button.dataset.tab === name);
    for (const pane of document.querySelectorAll(".bp-pane")) pane.hidden = pane.dataset.pane !== name;
    state.tab = name;
    if (name === "conflicts") OB.conflicts.opened(state);
    if (name !== "site") OB.site.stopDrawing(state);
  }

  OB.start = function start(map, config) {
    const list = minors(config);
    const state = {
      map, config, minorList: list, tiles: {}, drawing: null,
      minors: Object.fromEntries(list.map((m) => [m.code, m])),
      order: Object.fromEntries(list.map((m, i) => [m.code, i])),
      checked: new Set(config.default_layers), unifiedClass: schemeLookup(config),
    };
    OB.state = state;
    const panes = [["bp-polygons", 410], ["bp-lines", 420], ["bp-points", 430], ["bp-conflicts", 440], ["bp-site", 450], ["bp-highlight", 460]];
    for (const [name, z] of panes) map.createPane(name).style.zIndex = String(z);
    if (!config.basemap) map.getContainer().classList.add("bp-no-basemap");
    for (const button of document.querySelectorAll(".bp-tabs button")) {
      button.addEventListener("click", () => {
        selectTab(state, button.dataset.tab);
        history.replaceState(null, "", button.dataset.tab === "layers" ? "/" : "/" + button.dataset.tab);
      });
    }
    setupViewSwitch(state);
    buildTree(state);
    setupPopups(state);
    OB.conflicts.setup(state);
    OB.site.setup(state);
    if (config.bounds) map.fitBounds(config.bounds, { padding: [20, 20] });
    refreshLayers(state);
    selectTab(state, config.view);
    document.body.dataset.ready = "1";
  };
})();
