//! The loss curve as a self-contained SVG (no plotting dependency).

/// A polyline of `points` (step, loss) with axis labels; empty input gives a note instead.
pub fn loss_svg(points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (640.0, 360.0, 50.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if finite.is_empty() {
        out += "<text x=\"20\" y=\"30\">no finite loss values logged</text>\n</svg>\n";
        return out;
    }
    let (x0, x1) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let sx = |x: f64| pad + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0).max(1e-12) * (h - 2.0 * pad);
    out += &format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - pad, w - pad, h - pad, h - pad
    );
    let pts: Vec<String> = finite
        .iter()
        .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
        .collect();
    out += &format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        pts.join(" ")
    );
    out += &format!(
        "<text x=\"{pad}\" y=\"{}\">step {x0}</text>\n",
        h - pad + 20.0
    );
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">step {x1}</text>\n",
        w - pad,
        h - pad + 20.0
    );
    out += &format!("<text x=\"5\" y=\"{}\">{y1:.4}</text>\n", pad - 5.0);
    out += &format!("<text x=\"5\" y=\"{}\">{y0:.4}</text>\n", h - pad + 35.0);
    out += &format!(
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\">training loss</text>\n</svg>\n",
        w / 2.0
    );
    out
}
