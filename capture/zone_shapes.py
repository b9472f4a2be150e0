"""Privacy zones' shapes, as the configuration gives them: relative to the frame (0..1 on each
axis, origin top left), each a rectangle or a simple polygon. Pure Python, so the configuration
can check them without the media libraries (`capture.zones` fills them, with numpy and Pillow;
the idle daemon loads neither)."""
from __future__ import annotations

from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class Zone:
    """One zone: a rectangle (x0, y0, x1, y1) or a polygon of points (x, y), relative to the frame."""

    rect: tuple[float, float, float, float] | None = None
    polygon: tuple[Point, ...] | None = None

    def points(self) -> tuple[Point, ...]:
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        assert self.polygon is not None, "a zone is a rect or a polygon"
        return self.polygon


def rect_problem(rect: list[float]) -> str | None:
    """Why `rect` cannot be a zone, or None."""
    if len(rect) != 4:
        return "a rect is [x0, y0, x1, y1]"
    if any(not 0.0 <= v <= 1.0 for v in rect):
        return "outside the frame: coordinates are relative to it, from 0 to 1"
    x0, y0, x1, y1 = rect
    if not (x0 < x1 and y0 < y1):
        return "empty: x0 must be less than x1, and y0 less than y1"
    return None


def polygon_problem(points: list[list[float]]) -> str | None:
    """Why `points` cannot be a zone, or None: fewer than 3 points, a point outside the frame,
    no area, or edges that cross."""
    if len(points) < 3:
        return "a polygon needs at least 3 points"
    if any(len(p) != 2 for p in points):
        return "each point is [x, y]"
    if any(not 0.0 <= v <= 1.0 for p in points for v in p):
        return "outside the frame: coordinates are relative to it, from 0 to 1"
    pts = [(float(p[0]), float(p[1])) for p in points]
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, pts[1:] + pts[:1], strict=True)) / 2
    collinear = all(_orient(pts[0], pts[1], p) == 0 for p in pts[2:])
    if not collinear and _self_intersecting(pts):
        return "self-intersecting: its edges cross"
    if collinear or abs(area) < 1e-9:
        return "degenerate: it has no area"
    return None


def _self_intersecting(pts: list[Point]) -> bool:
    """Whether two edges of the closed polygon `pts` meet anywhere but at the vertex they share
    (an O(n^2) orientation test; zones have a handful of points)."""
    n = len(pts)
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            (a, b), (c, d) = edges[i], edges[j]
            if j == i + 1 or (i == 0 and j == n - 1):  # neighbours share one vertex
                shared, other_i, other_j = (b, a, d) if j == i + 1 else (a, b, c)
                # They overlap only if they run back along each other.
                if _orient(shared, other_i, other_j) == 0 and _dot(shared, other_i, other_j) > 0:
                    return True
                continue
            if _segments_meet(a, b, c, d):
                return True
    return False


def _orient(p: Point, q: Point, r: Point) -> int:
    cross = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return 0 if abs(cross) < 1e-12 else (1 if cross > 0 else -1)


def _dot(p: Point, q: Point, r: Point) -> float:
    return (q[0] - p[0]) * (r[0] - p[0]) + (q[1] - p[1]) * (r[1] - p[1])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """Whether r, collinear with p and q, lies between them."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def _segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    return ((o1 == 0 and _on_segment(a, b, c)) or (o2 == 0 and _on_segment(a, b, d))
            or (o3 == 0 and _on_segment(c, d, a)) or (o4 == 0 and _on_segment(c, d, b)))
