"""The planning-conditions document (规划条件) of a stored site check, as one self-contained HTML page.

No scripts, fonts or images from elsewhere: it opens offline and prints on A4 from any browser.
Every value is escaped; the layer versions it rests on are listed at the end so it can be cited.
"""

from __future__ import annotations

from html import escape

import numpy as np
import shapely

LEVEL_ZH = {"prohibited": "禁止", "restricted": "限制", "conditional": "有条件", "allowed": "允许", "none": "无"}
STATUS_ZH = {"hit": "涉及", "clear": "不涉及", "unknown": "未知"}
SETBACK_ZH = {"intersects": "与用地相交", "within_setback": "位于退让距离内", "beyond_setback": "在退让距离外",
              "none_nearby": "附近无", "unknown": "未知"}

CSS = """
@page { size: A4; margin: 16mm 14mm; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       font-size: 10.5pt; color: #111; margin: 0 auto; max-width: 190mm; line-height: 1.45; }
h1 { font-size: 18pt; text-align: center; margin: 0 0 2mm; letter-spacing: 0.2em; }
h2 { font-size: 12pt; border-bottom: 1.5px solid #333; margin: 6mm 0 2mm; padding-bottom: 1mm; }
.sub { text-align: center; color: #444; margin-bottom: 4mm; }
table { width: 100%; border-collapse: collapse; margin: 1mm 0 2mm; }
th, td { border: 1px solid #777; padding: 1.2mm 2mm; vertical-align: top; text-align: left; }
th { background: #eee; font-weight: 600; }
tr { break-inside: avoid; page-break-inside: avoid; }
td.num { text-align: right; white-space: nowrap; }
.verdict { font-size: 13pt; font-weight: 700; padding: 2mm 3mm; border: 2px solid #333; display: inline-block; }
.prohibited { color: #a50f15; } .restricted { color: #d94801; } .conditional { color: #8c6d31; }
.allowed { color: #238b45; }
.note { color: #555; font-size: 9pt; }
.site { display: flex; gap: 4mm; align-items: flex-start; }
.site table { flex: 1; margin: 0; }
.map { flex: none; border: 1px solid #999; }
footer { margin-top: 6mm; font-size: 8.5pt; color: #444; }
@media print { a { color: inherit; text-decoration: none; } }
"""


def _e(value) -> str:
    return "—" if value is None else escape(str(value))


def _pct(share) -> str:
    return "—" if share is None else f"{100 * float(share):.1f}%"


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{float(value):,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{float(value):,.0f}"


def site_svg(site: shapely.Geometry, size: int = 220) -> str:
    """The site outline, north up, with a scale bar (coordinates in metres)."""
    x0, y0, x1, y1 = site.bounds
    span = max(x1 - x0, y1 - y0) or 1.0
    pad = 0.08 * span
    scale = (size - 20) / (span + 2 * pad)

    def path(ring) -> str:
        xy = np.asarray(ring.coords)
        px = (xy[:, 0] - x0 + pad) * scale + 10
        py = (y1 + pad - xy[:, 1]) * scale + 10
        return "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True)) + " Z"

    parts = []
    for poly in shapely.get_parts(site):
        parts.append(path(poly.exterior))
        parts.extend(path(r) for r in poly.interiors)
    unit = 10 ** np.floor(np.log10(span / 3))
    bar = max(m * unit for m in (1, 2, 5) if m * unit <= span / 3)
    bar_px = bar * scale
    return (f'<svg class="map" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="site outline">'
            f'<path d="{" ".join(parts)}" fill="#fdd49e" fill-opacity="0.6" stroke="#b30000" stroke-width="1.5" '
            f'fill-rule="evenodd"/>'
            f'<line x1="10" y1="{size - 8}" x2="{10 + bar_px:.1f}" y2="{size - 8}" stroke="#000" stroke-width="2"/>'
            f'<text x="{14 + bar_px:.1f}" y="{size - 5}" font-size="9">{bar:g} m</text>'
            f'<text x="{size - 16}" y="16" font-size="11" font-weight="bold">N↑</text></svg>')


def conditions_html(stored: dict) -> str:
    """The document for a stored check from :func:`spatial.site.records.read_check`."""
    r = stored["result"]
    pc = r.get("planning_conditions") or {}
    verdict = r["verdict"]
    site = r["site"]
    out = [f"<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>规划条件 {_e(stored['check_id'])}"
           f"</title><style>{CSS}</style></head><body>",
           "<h1>建设用地规划条件</h1>",
           f"<div class=\"sub\">Planning conditions · 编号 {_e(stored['check_id'])} · 查询时间 "
           f"{_e(r['checked_at'][:19].replace('T', ' '))} UTC"
           + (f" · 依据 {_e(r['input']['as_of'])} 有效版本" if r["input"].get("as_of") else "") + "</div>"]
    out.append("<h2>一、用地概况 Site</h2><div class=\"site\">")
    out.append("<table><tr><th>用地面积</th><td class=\"num\">"
               f"{_num(site['area_m2'], 0)} m²</td></tr><tr><th>中心点 (经度, 纬度)</th><td>"
               f"{_e(', '.join(f'{v:.6f}' for v in site['centroid_lonlat']))}</td></tr>"
               f"<tr><th>坐标系</th><td>{_e(site['storage_crs'])}（输入 {_e(r['input']['crs'])}）</td></tr>"
               + (f"<tr><th>检查范围外扩</th><td>{_num(r['input']['buffer_m'])} m</td></tr>"
                  if r["input"].get("buffer_m") else "")
               + f"<tr><th>管控结论</th><td><span class=\"verdict {_e(verdict['level'])}\">"
               f"{_e(LEVEL_ZH[verdict['level']])}建设（{_e(verdict['level'])}）</span>"
               + ("" if verdict["complete"] else
                  f"<br><span class=\"note\">{len(verdict['unknown_layers'])}个图层无法判定，须核实："
                  f"{_e('、'.join(verdict['unknown_layers']))}</span>")
               + "</td></tr></table>" + site_svg(stored["site"]) + "</div>")
    out.extend(_parcels(pc))
    out.extend(_indicators(pc))
    out.extend(_setbacks(pc))
    out.extend(_constraints(r))
    out.extend(_assessments(r.get("assessments") or {}))
    out.extend(_terrain(r.get("terrain") or {}))
    versions = r.get("versions") or {}
    listed = "；".join(f"{code} v{v['version']}" for code, v in sorted(versions.items()) if v)
    missing = "、".join(code for code, v in sorted(versions.items()) if not v)
    out.append(f"<footer>本规划条件依据一张蓝图以下图层版本生成：{_e(listed)}。"
               + (f"未入库图层：{_e(missing)}。" if missing else "")
               + f"可凭编号 {_e(stored['check_id'])} 复核。</footer></body></html>")
    return "".join(out)


def _parcels(pc: dict) -> list[str]:
    out = ["<h2>二、所在控规地块 Regulatory-plan parcels</h2>"]
    if not pc.get("parcels"):
        out.append(f"<p>{_e(pc.get('reason_zh') or pc.get('reason') or '无控规地块')}</p>")
        return out
    out.append("<table><tr><th>地块编号</th><th>用地性质</th><th>占用地比例</th><th>面积 (m²)</th>"
               "<th>容积率</th><th>建筑密度</th><th>限高 (m)</th><th>绿地率</th></tr>")
    for p in pc["parcels"]:
        a = p["attributes"]
        far = _num(a.get("far_max")) + (f"（下限 {_num(a.get('far_min'))}）" if a.get("far_min") is not None else "")
        out.append(f"<tr><td>{_e(p['parcel_id'])}</td><td>{_e(a.get('land_use'))}</td><td class=\"num\">"
                   f"{_pct(p['share'])}</td><td class=\"num\">{_num(p['area_m2'], 0)}</td><td>{far}</td>"
                   f"<td class=\"num\">{_num(a.get('density_max'))}</td><td class=\"num\">{_num(a.get('height_max_m'))}"
                   f"</td><td class=\"num\">{_num(a.get('green_ratio_min'))}</td></tr>")
    out.append("</table>")
    if pc.get("status") == "partial":
        out.append(f"<p class=\"note\">用地中{_pct(pc.get('between_parcels_share'))}不在任何地块内，"
                   f"{_pct(pc.get('outside_coverage_share'))}超出控规覆盖范围。</p>")
    return out


def _indicators(pc: dict) -> list[str]:
    binding = pc.get("binding") or {}
    if not binding:
        return []
    out = ["<h2>三、规划条件 Planning conditions</h2><table><tr><th>指标</th><th>要求</th><th>依据</th></tr>"]
    use = binding.get("land_use")
    if use:
        value = use["value"] or " / ".join(f"{u['value']} {_pct(u['share'])}" for u in use["uses"])
        out.append(f"<tr><td>{_e(use['label_zh'])}</td><td>{_e(value)}</td><td>{_e(use['reason_zh'])}</td></tr>")
    for field, b in binding.items():
        if field == "land_use":
            continue
        sign = "≤ " if b["bind"] == "min" else "≥ "
        value = "控规未规定" if b["value"] is None else f"{sign}{_num(b['value'])} {b['unit']}".strip()
        out.append(f"<tr><td>{_e(b['label_zh'])}</td><td>{_e(value)}</td><td>{_e(b['reason_zh'])}</td></tr>")
    out.append("</table>")
    for c in pc.get("contradictions") or []:
        out.append(f"<p class=\"note prohibited\">注意：{_e(c['reason_zh'])}。</p>")
    return out


def _setbacks(pc: dict) -> list[str]:
    rows = pc.get("setbacks") or []
    if not rows:
        return []
    out = ["<h2>四、退让要求 Setbacks</h2><table><tr><th>项目</th><th>退让距离 (m)</th><th>最近距离 (m)</th>"
           "<th>情况</th></tr>"]
    road = (pc.get("binding") or {}).get("setback_road_m")
    if road and road.get("value") is not None:
        out.append(f"<tr><td>{_e(road['label_zh'])}</td><td class=\"num\">{_num(road['value'])}</td><td>—</td>"
                   f"<td>{_e(road['reason_zh'])}</td></tr>")
    for s in rows:
        out.append(f"<tr><td>{_e(s['label_zh'])}</td><td class=\"num\">{_num(s['setback_m'])}</td><td class=\"num\">"
                   f"{_num(s['nearest_m'])}</td><td>{_e(SETBACK_ZH.get(s['status'], s['status']))}</td></tr>")
    out.append("</table>")
    return out


def _constraints(r: dict) -> list[str]:
    out = ["<h2>五、用地管控要求 Constraints</h2>"]
    reasons = r["verdict"]["reasons"]
    if reasons:
        out.append("<table><tr><th>管控</th><th>图层</th><th>涉及面积 (m²)</th><th>比例</th><th>要求</th></tr>")
        for x in reasons:
            out.append(f"<tr><td class=\"{_e(x['level'])}\">{_e(LEVEL_ZH[x['level']])}</td><td>{_e(x['layer'])} "
                       f"{_e(x['name_zh'])}</td><td class=\"num\">{_num(x['area_m2'], 0)}</td><td class=\"num\">"
                       f"{_pct(x['share'])}</td><td>{_e(x['text_zh'])}</td></tr>")
        out.append("</table>")
    clear = [e for e in r["constraints"] if e["status"] == "clear"]
    if clear:
        out.append(f"<p class=\"note\">不涉及：{_e('、'.join(e['name_zh'] for e in clear))}。</p>")
    return out


def _assessments(a: dict) -> list[str]:
    out = ["<h2>六、区域评估成果 Regional assessments</h2>"]
    if a.get("covered"):
        out.append("<table><tr><th>评估事项</th><th>评估区域</th><th>结论</th><th>有效期至</th><th>项目须满足的条件</th></tr>")
        for c in a["covered"]:
            out.append(f"<tr><td>{_e(c['name_zh'])}</td><td>{_e(c['zone_id'])}</td><td>{_e(c['result'])}</td>"
                       f"<td>{_e(c['valid_to'])}</td><td>{'<br>'.join(_e(t) for t in c['conditions'])}</td></tr>")
        out.append("</table><p class=\"note\">以上事项已由区域评估覆盖，项目无需单独评估。</p>")
    if a.get("not_covered"):
        listed = "；".join(f"{c['name_zh']}（{c['reason_zh']}）" for c in a["not_covered"])
        out.append(f"<p>须单独评估：{_e(listed)}。</p>")
    return out


def _terrain(t: dict) -> list[str]:
    elev, slope = (t.get("elevation") or {}).get("statistics"), (t.get("slope") or {}).get("statistics")
    if not elev and not slope:
        return []
    out = ["<h2>七、地形 Terrain</h2><table>"]
    if elev:
        out.append(f"<tr><th>高程 (m)</th><td>最低 {_num(elev['min'])}，平均 {_num(elev['mean'])}，"
                   f"最高 {_num(elev['max'])}</td></tr>")
    if slope:
        steep = next((x for x in slope["above"]), None)
        out.append(f"<tr><th>坡度 (°)</th><td>平均 {_num(slope['mean'])}，最大 {_num(slope['max'])}"
                   + (f"；大于{_num(steep['threshold'])}°的面积占 {_pct(steep['share'])}" if steep else "")
                   + "</td></tr>")
    out.append("</table>")
    return out
