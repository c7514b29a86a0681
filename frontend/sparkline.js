// A small inline SVG of the price over the alert's window: the shape of the move at a glance.
// Built with DOM calls only (no markup strings), no chart library.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 96;
const HEIGHT = 26;
const PAD = 3;
const MAX_POINTS = 60;

function node(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/** Valid [ms, price] pairs, in time order, at most MAX_POINTS of them. */
export function cleanPath(path) {
  if (!Array.isArray(path)) return [];
  const points = [];
  for (const point of path) {
    if (!Array.isArray(point) || point.length < 2) continue;
    const t = Number(point[0]);
    const p = Number(point[1]);
    if (Number.isFinite(t) && Number.isFinite(p)) points.push([t, p]);
  }
  points.sort((a, b) => a[0] - b[0]);
  return points.length > MAX_POINTS ? points.slice(points.length - MAX_POINTS) : points;
}

/**
 * An <svg> of the alert's path (with its base price as a dashed line), or null when the
 * alert carries fewer than two usable points.
 */
export function sparkline(alert) {
  const points = cleanPath(alert.path);
  if (points.length < 2) return null;
  const base = Number(alert.base_price);
  const prices = points.map((p) => p[1]);
  if (Number.isFinite(base)) prices.push(base);
  let low = Math.min(...prices);
  let high = Math.max(...prices);
  if (high === low) { high += 1; low -= 1; }
  const t0 = points[0][0];
  const span = points[points.length - 1][0] - t0 || 1;
  const x = (t) => PAD + ((t - t0) / span) * (WIDTH - 2 * PAD);
  const y = (p) => PAD + (1 - (p - low) / (high - low)) * (HEIGHT - 2 * PAD);

  const svg = node("svg", {
    class: "spark", width: WIDTH, height: HEIGHT, viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img", focusable: "false",
  });
  const title = node("title", {});
  title.textContent = "Price over the window: " + points[0][1] + " to "
    + points[points.length - 1][1];
  svg.append(title);
  if (Number.isFinite(base)) {
    const level = y(base).toFixed(1);
    svg.append(node("line", {
      class: "spark-base", x1: PAD, x2: WIDTH - PAD, y1: level, y2: level,
    }));
  }
  const coordinates = points.map(([t, p]) => x(t).toFixed(1) + "," + y(p).toFixed(1)).join(" ");
  svg.append(node("polyline", { class: "spark-line", points: coordinates }));
  const [lastT, lastP] = points[points.length - 1];
  svg.append(node("circle", {
    class: "spark-end", cx: x(lastT).toFixed(1), cy: y(lastP).toFixed(1), r: 2,
  }));
  return svg;
}
