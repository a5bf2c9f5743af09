/* One Blueprint web map: site check. Draw a polygon (click vertices, Finish) or upload a GeoJSON file;
 * POST /api/v1/sites/check; show the verdict, constraints, planning conditions and assessment coverage
 * beside the map, highlight the features hit and link the printable planning conditions. */
(function () {
  "use strict";

  const OB = window.OneBlueprint;
  const { el, clear, fmtNumber, fmtArea, bilingual, api, problemNode } = OB;

  function setupSite(state) {
    state.siteLayer = L.featureGroup([], { pane: "bp-site" }).addTo(state.map);
    state.hitLayer = L.featureGroup([], { pane: "bp-highlight" }).addTo(state.map);
    const draw = document.getElementById("bp-draw");
    const finish = document.getElementById("bp-finish");
    draw.addEventListener("click", () => startDrawing(state));
    finish.addEventListener("click", () => finishDrawing(state));
    document.getElementById("bp-clear").addEventListener("click", () => clearSite(state));
    document.getElementById("bp-upload").addEventListener("change", (ev) => uploadSite(state, ev.target));
    state.map.on("click", (ev) => { if (state.drawing) addVertex(state, ev.latlng); });
    state.map.on("dblclick", () => { if (state.drawing && state.drawing.points.length >= 3) finishDrawing(state); });
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.drawing) stopDrawing(state); });
  }

  function siteMessage(...nodes) { const box = clear(document.getElementById("bp-site-message")); box.append(...nodes); }

  function clearSite(state) {
    stopDrawing(state);
    state.siteLayer.clearLayers();
    state.hitLayer.clearLayers();
    clear(document.getElementById("bp-site-report"));
    siteMessage();
  }

  function startDrawing(state) {
    clearSite(state);
    state.drawing = { points: [], line: L.polyline([], { pane: "bp-site", color: "#d7191c", weight: 2, dashArray: "4 3" }).addTo(state.siteLayer) };
    state.map.doubleClickZoom.disable();
    state.map.getContainer().classList.add("bp-drawing");
    siteMessage("点击地图添加顶点 Click the map to add vertices (Esc cancels).");
  }

  function stopDrawing(state) {
    if (!state.drawing) return;
    state.drawing = null;
    state.map.doubleClickZoom.enable();
    state.map.getContainer().classList.remove("bp-drawing");
    document.getElementById("bp-finish").disabled = true;
  }

  function addVertex(state, latlng) {
    const d = state.drawing;
    if (d.points.length && latlng.equals(d.points[d.points.length - 1])) return;  // the second click of a dblclick
    d.points.push(latlng);
    d.line.setLatLngs(d.points.concat(d.points.length > 2 ? [d.points[0]] : []));
    L.circleMarker(latlng, { pane: "bp-site", radius: 4, color: "#d7191c", fillOpacity: 1 }).addTo(state.siteLayer);
    document.getElementById("bp-finish").disabled = d.points.length < 3;
    siteMessage(`${d.points.length} 个顶点 vertices` + (d.points.length >= 3 ? " — 点击“完成” press Finish" : ""));
  }

  function finishDrawing(state) {
    const d = state.drawing;
    if (!d || d.points.length < 3) return;
    const ring = d.points.map((p) => [Number(p.lng.toFixed(7)), Number(p.lat.toFixed(7))]);
    ring.push(ring[0]);
    stopDrawing(state);
    checkSite(state, { type: "Polygon", coordinates: [ring] });
  }

  function siteGeometry(json) {
    if (!json || typeof json !== "object") return null;
    if (json.type === "FeatureCollection") {
      const polygons = (json.features || []).filter((f) => f && f.geometry && /Polygon$/.test(f.geometry.type));
      return polygons.length ? polygons[0].geometry : null;
    }
    if (json.type === "Feature") return siteGeometry(json.geometry);
    if (json.type === "MultiPolygon" && json.coordinates && json.coordinates.length === 1) {
      return { type: "Polygon", coordinates: json.coordinates[0] };
    }
    return /Polygon$/.test(json.type || "") ? json : null;
  }

  function uploadSite(state, input) {
    const file = input.files && input.files[0];
    if (!file) return;
    clearSite(state);
    if (file.size > state.config.max_upload_bytes) {
      siteMessage(el("p", { class: "bp-error" }, `文件过大 File too large: ${fmtNumber(file.size)} bytes (max ${fmtNumber(state.config.max_upload_bytes)}).`));
      input.value = "";
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      input.value = "";
      let json = null;
      try { json = JSON.parse(reader.result); } catch (err) {
        siteMessage(el("p", { class: "bp-error" }, `${file.name} 不是 GeoJSON — not valid JSON: ${err.message}`));
        return;
      }
      const geometry = siteGeometry(json);
      if (!geometry) {
        siteMessage(el("p", { class: "bp-error" }, `${file.name} 中没有面 — no polygon in the file (a Polygon, a Feature or a FeatureCollection of polygons, EPSG:4326).`));
        return;
      }
      checkSite(state, geometry, file.name);
    };
    reader.readAsText(file);
  }

  async function checkSite(state, geometry, source) {
    state.siteLayer.clearLayers();
    const shape = L.geoJSON(geometry, { pane: "bp-site", style: { color: "#d7191c", weight: 3, fillOpacity: 0.08 } }).addTo(state.siteLayer);
    try { state.map.fitBounds(shape.getBounds(), { maxZoom: 17, padding: [60, 60] }); } catch (err) { /* empty geometry */ }
    siteMessage(`检查中… Checking${source ? " " + source : ""}…`);
    const result = await api("/api/v1/sites/check", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ geometry }) });
    const report = clear(document.getElementById("bp-site-report"));
    if (!result.ok) { siteMessage(problemNode(result, "选址检查服务 Site-check service ")); return; }
    siteMessage();
    const normalized = renderReport(state, report, result.data);
    highlightHits(state, normalized.layers);
  }

  function renderValue(value) {
    if (value === null || value === undefined || value === "") return "—";
    if (Array.isArray(value)) {
      if (!value.length) return "—";
      return el("ul", {}, value.map((v) => el("li", {}, renderValue(v))));
    }
    if (typeof value === "object") {
      return el("dl", { class: "bp-dl" }, Object.entries(value).map(([k, v]) => [el("dt", {}, k), el("dd", {}, renderValue(v))]));
    }
    return String(value);
  }

  function joined(...parts) { return parts.filter((p) => p !== undefined && p !== null && p !== "").join(" "); }

  /* The site-check answer (POST /api/v1/sites/check) as the report shows it: one row per layer. */
  function normalizeReport(data) {
    const verdict = data.verdict;
    const layers = data.constraints.map((l) => ({
      code: l.layer, name_zh: l.name_zh, name_en: l.name_en, status: l.status,
      level: l.control_level, overlap_m2: l.overlap_m2, share: l.share,
      text: joined(l.rule.text_zh, l.rule.text_en),
      reason: joined(l.reason_zh, l.reason),
      features: l.features,
    }));
    return {
      check_id: data.check_id, verdict: String(verdict.level), complete: verdict.complete,
      reasons: verdict.reasons, layers,
      conditions: data.planning_conditions,
      assessments: data.assessments, blueprint: data.blueprint, terrain: data.terrain,
      versions: data.versions, timings: data.timings_ms, site: data.site,
    };
  }

  function reasonText(r) {
    if (!r || typeof r !== "object") return String(r);
    return joined(r.level, "·", r.layer, r.name_zh, r.relation && r.relation !== "inside" ? `(${r.relation})` : "", "—",
      r.text_zh || r.text || "", r.area_m2 !== undefined && r.area_m2 !== null ? `· ${fmtArea(r.area_m2)}` : "");
  }

  function conditionsNode(c) {
    if (!c || typeof c !== "object" || Array.isArray(c)) return renderValue(c);
    const box = el("div", {});
    if (c.status) box.append(el("p", { class: "bp-note" }, joined(c.status, c.reason_zh, c.reason)));
    if (c.binding && Object.keys(c.binding).length) box.append(renderValue(c.binding));
    if ((c.parcels || []).length) {
      box.append(el("p", {}, `控规地块 Regulatory parcels: ${c.parcels.length}`), renderValue(c.parcels));
    }
    if ((c.setbacks || []).length) {
      box.append(el("table", { class: "bp-report-table" },
        el("tr", {}, ["退让 Setback", "距离 m", "最近 Nearest", "状态 Status"].map((h) => el("th", {}, h))),
        c.setbacks.map((s) => el("tr", {}, el("td", {}, joined(s.label_zh, s.label_en)), el("td", { class: "bp-num" }, renderValue(s.setback_m)),
          el("td", { class: "bp-num" }, s.nearest_m === null || s.nearest_m === undefined ? "—" : fmtNumber(s.nearest_m, 1)),
          el("td", {}, s.status || "—")))));
    }
    const known = new Set(["status", "reason", "reason_zh", "binding", "parcels", "setbacks", "layer", "version"]);
    const rest = Object.fromEntries(Object.entries(c).filter(([k]) => !known.has(k)));
    if (Object.keys(rest).length) box.append(renderValue(rest));
    return box;
  }

  function assessmentsNode(a) {
    if (!a || typeof a !== "object" || Array.isArray(a) || !("covered" in a || "not_covered" in a)) return renderValue(a);
    const rows = [];
    for (const c of a.covered || []) {
      rows.push(el("li", { class: "bp-covered" }, "✓ ", joined(c.name_zh, c.name_en, c.type ? `(${c.type})` : "", c.result ? `· ${c.result}` : "",
        c.valid_to ? `· valid to ${c.valid_to}` : "", c.zone_id ? `· zone ${c.zone_id}` : "")));
    }
    for (const c of a.not_covered || []) {
      rows.push(el("li", { class: "bp-not-covered" }, "✗ ", joined(c.name_zh, c.name_en, "—", c.reason_zh || c.reason || "")));
    }
    return el("div", {}, a.on ? el("p", { class: "bp-note" }, `截至 As of ${a.on}`) : null, el("ul", { class: "bp-assess" }, rows));
  }

  function renderReport(state, box, data) {
    const r = normalizeReport(data);
    box.append(el("div", { class: `bp-verdict bp-verdict-${r.verdict.replace(/[^a-z_]/gi, "")}`, id: "bp-verdict" },
      `结论 Verdict: ${r.verdict}`, r.complete === false ? el("span", { class: "bp-count" }, " 不完整 incomplete") : null));
    const decisive = r.reasons.filter((x) => !(x && x.relation === "unknown"));
    const unknown = r.reasons.length - decisive.length;
    if (decisive.length) box.append(el("ul", { class: "bp-reasons" }, decisive.map((x) => el("li", {}, reasonText(x)))));
    if (r.check_id !== undefined && r.check_id !== null) {
      box.append(el("p", {}, el("a", { href: `/api/v1/sites/${encodeURIComponent(r.check_id)}/conditions.html`, target: "_blank",
        id: "bp-conditions-link" }, "打印规划条件 Printable planning conditions"), el("span", { class: "bp-count" }, ` ${r.check_id}`)));
    }
    box.append(el("h3", {}, "约束 Constraints"));
    const row = (l) => el("tr", { class: `bp-status-${l.status}`, "data-code": l.code },
      el("td", {}, el("span", { class: "bp-code" }, l.code), " ", bilingual(l)),
      el("td", {}, l.status), el("td", {}, l.level || "—"),
      el("td", { class: "bp-num" }, l.overlap_m2 === undefined || l.overlap_m2 === null ? "—" : fmtArea(l.overlap_m2)),
      el("td", { class: "bp-num" }, l.share === undefined || l.share === null ? "—" : fmtNumber(100 * l.share, 1) + "%"));
    const head = () => el("tr", {}, ["图层 Layer", "结果 Result", "管控 Control", "重叠 Overlap", "占比 Share"].map((h) => el("th", {}, h)));
    const hits = r.layers.filter((l) => l.status === "hit");
    if (hits.length) {
      box.append(el("table", { class: "bp-report-table", id: "bp-constraints" }, head(), hits.map(row)));
      for (const l of hits.filter((x) => x.text)) box.append(el("p", { class: "bp-advice" }, el("strong", {}, `${l.code} `), l.text));
    } else {
      box.append(el("p", { id: "bp-constraints" }, "无约束图层 No constraining layer is hit."));
    }
    const unknownLayers = r.layers.filter((l) => l.status === "unknown");
    if (unknownLayers.length || unknown) {
      box.append(el("details", { class: "bp-unknown" },
        el("summary", {}, `${unknownLayers.length || unknown} 个图层无法判断 layers unknown (no data or outside coverage)`),
        el("table", { class: "bp-report-table" }, unknownLayers.map((l) => el("tr", { class: "bp-status-unknown", "data-code": l.code },
          el("td", {}, el("span", { class: "bp-code" }, l.code), " ", bilingual(l)), el("td", {}, l.reason || l.status))))));
    }
    const clearCount = r.layers.filter((l) => l.status === "clear").length;
    if (clearCount) box.append(el("p", { class: "bp-note" }, `${clearCount} 个图层无冲突 layers clear`));
    if (r.blueprint && (r.blueprint.classes || []).length) {
      box.append(el("h3", {}, "一张蓝图 Blueprint"), el("ul", {}, r.blueprint.classes.map((c) => el("li", {},
        el("span", { class: "bp-swatch", style: { background: state.config.unified_colors[c.unified_class] || "#ccc" } }), " ",
        joined(state.config.unified_names[c.unified_class] || c.unified_class, "·", c.control_level, "·", fmtNumber(100 * (c.share || 0), 1) + "%")))));
    }
    box.append(el("h3", {}, "规划条件 Planning conditions"), el("div", { id: "bp-conditions" }, conditionsNode(r.conditions)));
    box.append(el("h3", {}, "区域评估 Regional assessments"), el("div", { id: "bp-assessments" }, assessmentsNode(r.assessments)));
    box.append(el("details", {}, el("summary", {}, "数据版本与耗时 Versions and timings"),
      renderValue({ site: r.site, terrain: r.terrain, versions: r.versions, timings: r.timings })));
    return r;
  }

  async function highlightHits(state, layers) {
    const hits = layers.filter((l) => l.status === "hit" && (l.features || []).length && state.config.versions[l.code]);
    await Promise.all(hits.map(async (l) => {
      const fids = l.features.slice(0, 200).map((f) => f.fid).join(",");
      const result = await api(`/api/v1/layers/${l.code}/features?fid=${fids}&limit=200`);
      if (!result.ok) return;
      L.geoJSON(result.data, { pane: "bp-highlight", style: { color: "#ff00ff", weight: 3, fillOpacity: 0.15, dashArray: "6 3" } })
        .bindTooltip(`${l.code} ${l.name_zh || ""}`).addTo(state.hitLayer);
    }));
  }


  OB.site = { setup: setupSite, stopDrawing };
})();
