import { distanceMeters } from '../core/derive-presence.js';

/**
 * Location coarsening by snapping to a fixed grid, in the style of RFC 6772
 * §6.5.2 (reducing the precision of geodetic location).
 *
 * Why a fixed grid and not, say, random noise or a circle around the point:
 * a watcher who reads the location many times could average noisy reports
 * (or intersect circles) and converge on the true point. Here the output
 * depends ONLY on which grid cell the true point falls in: every point of a
 * cell yields the same bytes, so a stationary or jittering owner produces the
 * same report over and over, and no number of reads gets closer than the cell.
 * The grid is anchored at latitude 0 / longitude 0 and never depends on the
 * point, the watcher or the time, so there is nothing to average out.
 *
 * The known limit of any grid (acknowledged by RFC 6772 too): a point that
 * moves, or jitters, across a cell boundary shows the watcher that it is near
 * that boundary at that moment. What is revealed is bounded by the grid, and
 * a point well inside a cell reveals nothing more than the cell.
 *
 * Cells: latitude bands of d = cell / 111,319.49 degrees (111,319.49 m is
 * one degree of arc on the WGS 84 equator; the Earth is taken as a sphere for
 * both axes, which a precision level does not need to beat), band index
 * floor(lat / d). Each band is divided in longitude by steps of
 * cell / (111,319.49 cos(band centre latitude)) degrees, computed from the
 * band's centre only so it is the same for every point of the band, widened
 * just enough that a whole number of columns fills the circle (so there is no
 * narrower left-over column at the antimeridian, and 180 / -180 are one
 * cell), and clamped to 360: near the poles one cell is the whole band, and
 * its longitude is reported as 0. The two polar bands are clipped at the
 * poles, so 90 and -90 stay in range.
 *
 * The reported point is the cell's centre (of the clipped band for the polar
 * ones), rounded to 6 decimals; radiusMeters is the cell's half-diagonal (the
 * largest distance from the reported point to the cell's corners and edge
 * midpoints) rounded up to a whole metre. The owner's fix accuracy is
 * deliberately not added: it varies with every fix and would leak something
 * about where in the cell the fix is.
 */
export const GRID_METERS = { city: 10_000, km: 1_000, '100m': 100 } as const;

export type Precision = 'city' | 'km' | '100m' | 'exact';

export interface SnappedLocation {
  readonly latitude: number;
  readonly longitude: number;
  readonly radiusMeters: number;
}

const METERS_PER_DEGREE = 111_319.49;

/** Six decimals (about 0.1 m), and never -0 (it would print as "-0" in some encoders). */
function round6(value: number): number {
  return Math.round(value * 1e6) / 1e6 + 0;
}

/** Into [-180, 180): 180 and -180 are the same meridian and land in the same cell. */
function wrapLongitude(longitude: number): number {
  return ((((longitude + 180) % 360) + 360) % 360) - 180;
}

export interface GridCell {
  /** Latitude band index, floor(latitude / d), the top band also holding the pole. */
  readonly band: number;
  /** Longitude column within the band, 0 ≤ column < columns; 0 when the band is one cell. */
  readonly column: number;
  /** Cell bounds in degrees, west in [-180, 180); east may pass 180 (the cell then spans the antimeridian). */
  readonly south: number;
  readonly north: number;
  readonly west: number;
  readonly east: number;
}

/** The grid cell a point falls in (RFC 6772 §6.5.2 style grid; see above). */
export function gridCell(latitude: number, longitude: number, precision: Exclude<Precision, 'exact'>): GridCell {
  const cell = GRID_METERS[precision];
  const d = cell / METERS_PER_DEGREE;
  // Clamped so that latitude 90 never opens a band of its own above the pole (when 90 / d is whole).
  const band = Math.max(Math.min(Math.floor(latitude / d), Math.ceil(90 / d) - 1), -Math.ceil(90 / d));
  // The polar bands are clipped to the poles; every other band is [band d, (band + 1) d).
  const south = Math.max(-90, band * d);
  const north = Math.min(90, (band + 1) * d);
  const centre = (south + north) / 2;
  // The step comes from the band's centre only, so it is the same for every point of the band, and is
  // widened so a whole number of columns fills the circle: no narrower left-over column at the
  // antimeridian, and 180 and -180 fall in the same cell. One column is the whole band.
  const rawStep = cell / (METERS_PER_DEGREE * Math.cos((centre * Math.PI) / 180));
  const columns = rawStep > 0 && rawStep < 360 ? Math.max(1, Math.floor(360 / rawStep)) : 1;
  if (columns === 1) return { band, column: 0, south, north, west: -180, east: 180 };
  const step = 360 / columns;
  // Anchored at longitude 0; taken modulo the column count so the column astride 180 (odd counts) is one cell.
  const column = (((Math.floor(wrapLongitude(longitude) / step) % columns) + columns) % columns);
  const west = column * step >= 180 ? column * step - 360 : column * step;
  return { band, column, south, north, west, east: west + step };
}

/**
 * Snaps a WGS 84 point to the grid of the given precision. Pure and
 * deterministic. Throws a RangeError for a latitude outside [-90, 90] or a
 * non-finite input (ingest validates both, so this is a programming error).
 */
export function snapLocation(latitude: number, longitude: number, accuracy: number, precision: Precision): SnappedLocation {
  if (!Number.isFinite(latitude) || latitude < -90 || latitude > 90) throw new RangeError(`latitude must be within [-90, 90], got ${latitude}`);
  if (!Number.isFinite(longitude)) throw new RangeError(`longitude must be finite, got ${longitude}`);
  if (!Number.isFinite(accuracy)) throw new RangeError(`accuracy must be finite, got ${accuracy}`);
  const lon = longitude >= -180 && longitude <= 180 ? longitude : wrapLongitude(longitude);

  if (precision === 'exact') {
    return { latitude: round6(latitude), longitude: round6(lon), radiusMeters: Math.max(1, Math.ceil(accuracy)) };
  }

  const { south, north, west, east } = gridCell(latitude, lon, precision);
  const centreLatitude = (south + north) / 2;
  const centreLongitude = (west + east) / 2;
  const outLatitude = round6(centreLatitude);
  const outLongitude = round6(wrapLongitude(centreLongitude));

  // Distances from the reported (rounded) point, so the circle covers the cell exactly as sent.
  let radius = 0;
  for (const lat of [south, centreLatitude, north]) {
    for (const lng of [west, centreLongitude, east]) {
      radius = Math.max(radius, distanceMeters(outLatitude, outLongitude, lat, lng));
    }
  }
  return { latitude: outLatitude, longitude: outLongitude, radiusMeters: Math.max(1, Math.ceil(radius)) };
}
