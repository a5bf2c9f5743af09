/* One Blueprint web map: conflict review. Conflicts from /api/v1/conflicts coloured by severity,
 * filters by type, severity, district and status, details on click, and the planner's status change
 * (POST /api/v1/conflicts/{id}/status). Errors from the service are shown, never thrown. */
(function () {
  "use strict";

  const OB = window.OneBlueprint;
  const { el, clear, fmtNumber, fmtArea, bilingual, api, problemNode, attributeTable } = OB;

  function severityBadge(state, severity) {
    return el("span", { class: "bp-badge", style: { background: state.config.severity_colors[severity] || "#999" } }, severity);
  }

  async function loadDistricts(state, select) {
    if (!state.config.versions["1101"] || select.dataset.loaded) return;
    select.dataset.loaded = "1";
    const result = await api("/api/v1/layers/1101/features?geometry=false&limit=1000");
    if (!result.ok) return;
    const seen = new Set();
    for (const f of result.data.features) {
      const code = f.properties.district_code;
      if (!code || seen.has(code)) continue;
      seen.add(code);
      select.append(el("option", { value: code }, `${code} ${f.properties.district_name || ""}`));
    }
  }

  function setupConflicts(state) {
    const form = document.getElementById("bp-conflict-filters");
    for (const t of state.config.conflict_types) form.type.append(el("option", { value: t.code }, `${t.code} ${t.name_zh}`));
    for (const s of Object.keys(state.config.severity_colors)) form.severity.append(el("option", { value: s }, s));
    for (const s of state.config.statuses) form.status.append(el("option", { value: s }, s));
    state.conflictLayer = L.geoJSON(null, {
      pane: "bp-conflicts",
      style: (f) => ({ color: state.config.severity_colors[f.properties.severity] || "#999", weight: 2,
                       fillOpacity: 0.45, fillColor: state.config.severity_colors[f.properties.severity] || "#999" }),
      onEachFeature: (f, layer) => layer.on("click", (ev) => { L.DomEvent.stopPropagation(ev); showConflict(state, f.properties.id); }),
    }).addTo(state.map);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); searchConflicts(state, 1); });
    state.conflictsReady = false;
  }

  async function searchConflicts(state, page) {
    const form = document.getElementById("bp-conflict-filters");
    const params = new URLSearchParams({ page: String(page), page_size: "50" });
    for (const name of ["type", "severity", "district", "status"]) if (form[name].value) params.set(name, form[name].value);
    if (form.in_view.checked) {
      const b = state.map.getBounds();
      params.set("bbox", [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(","));
    }
    const summary = clear(document.getElementById("bp-conflict-summary"));
    const list = clear(document.getElementById("bp-conflict-list"));
    const pager = clear(document.getElementById("bp-conflict-pager"));
    summary.append("查询中… Searching…");
    const result = await api(`/api/v1/conflicts?${params}`);
    clear(summary);
    state.conflictLayer.clearLayers();
    state.conflictsLoaded = true;
    if (!result.ok) { summary.append(problemNode(result, "冲突服务 Conflict service ")); return; }
    const data = result.data;
    if (!data.items.length) {
      summary.append(el("p", { class: "bp-empty-state" }, "没有符合条件的冲突 No conflicts match these filters."));
      return;
    }
    summary.append(`共 ${fmtNumber(data.total)} 处冲突 ${fmtNumber(data.total)} conflicts · 第 ${data.page} 页 page ${data.page}`);
    for (const item of data.items) {
      if (item.geometry) state.conflictLayer.addData({ type: "Feature", geometry: item.geometry, properties: item });
      list.append(el("li", { class: "bp-conflict", "data-id": item.id, onclick: () => showConflict(state, item.id) },
        severityBadge(state, item.severity), " ", el("strong", {}, item.rule), " ", item.name_zh || "",
        el("div", { class: "bp-sub" }, `${item.name_en || ""} · ${fmtArea(item.area_m2)} · ` +
          `${item.district || "—"} ${item.district_name || ""} · ${item.status}`)));
    }
    const pages = Math.ceil(data.total / data.page_size);
    if (pages > 1) {
      pager.append(el("button", { type: "button", disabled: page <= 1, onclick: () => searchConflicts(state, page - 1) }, "‹ 上一页 Prev"),
        ` ${page} / ${pages} `,
        el("button", { type: "button", disabled: page >= pages, onclick: () => searchConflicts(state, page + 1) }, "下一页 Next ›"));
    }
  }

  function featureBlock(title, layer, fid, attrs) {
    const minor = OB.state.minors[layer];
    return el("div", { class: "bp-side" }, el("h4", {}, title, " ", minor ? bilingual(minor) : layer, ` (${layer}) fid ${fid}`),
      attrs ? attributeTable(minor || { attributes: [] }, attrs) : null);
  }

  async function showConflict(state, id) {
    const box = clear(document.getElementById("bp-conflict-detail"));
    for (const li of document.querySelectorAll(".bp-conflict")) li.classList.toggle("bp-selected", li.dataset.id === String(id));
    box.append("加载中… Loading…");
    const result = await api(`/api/v1/conflicts/${id}`);
    clear(box);
    if (!result.ok) { box.append(problemNode(result, "冲突服务 Conflict service ")); return; }
    const c = result.data;
    if (c.geometry) {
      const shape = L.geoJSON(c.geometry);
      state.map.fitBounds(shape.getBounds(), { maxZoom: 16, padding: [80, 80] });
    }
    box.append(
      el("h3", {}, severityBadge(state, c.severity), ` ${c.rule} ${c.name_zh || ""}`),
      el("p", { class: "bp-sub" }, c.name_en || ""),
      el("table", { class: "bp-attrs" },
        el("tr", {}, el("th", {}, "编号 ID"), el("td", {}, String(c.id))),
        el("tr", {}, el("th", {}, "状态 Status"), el("td", {}, c.status)),
        el("tr", {}, el("th", {}, "面积 Area"), el("td", {}, fmtArea(c.area_m2))),
        el("tr", {}, el("th", {}, "行政区 District"), el("td", {}, `${c.district || c.district_code || "—"} ${c.district_name || ""}`)),
        c.prevails ? el("tr", {}, el("th", {}, "优先 Prevails"), el("td", {}, `${c.prevails} (${c.prevailing_layer || ""})`)) : null),
      featureBlock("A", c.a_layer, c.a_fid, c.a_attrs),
      c.b_layer ? featureBlock("B", c.b_layer, c.b_fid, c.b_attrs) : null,
      c.advice_zh || c.advice_en ? el("p", { class: "bp-advice" }, el("strong", {}, "建议 Advice: "), c.advice_zh || "", " ", c.advice_en || "") : null,
      eventsList(c.events || []),
      statusForm(state, c));
  }

  function eventsList(events) {
    if (!events.length) return null;
    return el("details", {}, el("summary", {}, `记录 History (${events.length})`),
      el("ul", {}, events.map((e) => el("li", {}, `${e.at || ""} ${e.status}${e.adjusted_plan ? " adjusted " + e.adjusted_plan : ""}` +
        `${e.by ? " by " + e.by : ""}${e.note ? " — " + e.note : ""}`))));
  }

  function statusForm(state, c) {
    const message = el("div", { class: "bp-note", role: "status" });
    const form = el("form", { class: "bp-status-form", id: "bp-status-form" },
      el("h4", {}, "处理 Set status"),
      el("label", {}, "状态 Status ", el("select", { name: "status" },
        ["assigned", "resolved", "accepted"].map((s) => el("option", { value: s }, s)))),
      el("label", {}, "调整方 Adjusted plan ", el("select", { name: "adjusted_plan" },
        el("option", { value: "" }, "—"), el("option", { value: "a" }, `a ${c.a_layer}`),
        c.b_layer ? el("option", { value: "b" }, `b ${c.b_layer}`) : null)),
      el("label", {}, "说明 Note ", el("input", { name: "note", type: "text" })),
      el("label", {}, "经办人 By ", el("input", { name: "by", type: "text" })),
      el("button", { type: "submit" }, "保存 Save"), message);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { status: form.status.value };
      if (form.adjusted_plan.value) body.adjusted_plan = form.adjusted_plan.value;
      if (form.note.value) body.note = form.note.value;
      if (form.by.value) body.by = form.by.value;
      const result = await api(`/api/v1/conflicts/${c.id}/status`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      clear(message);
      if (!result.ok) { message.append(problemNode(result, "冲突服务 Conflict service ")); return; }
      await searchConflicts(state, 1);
      await showConflict(state, c.id);
      document.querySelector("#bp-conflict-detail .bp-status-form .bp-note").append(`已保存 Saved: ${result.data.status}`);
    });
    return form;
  }


  OB.conflicts = {
    setup: setupConflicts,
    opened(state) {
      loadDistricts(state, document.getElementById("bp-conflict-filters").district);
      if (!state.conflictsLoaded) searchConflicts(state, 1);
    },
  };
})();
