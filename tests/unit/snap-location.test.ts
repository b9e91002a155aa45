import fc from 'fast-check';
import t from 'tap';
import { distanceMeters } from '../../core/derive-presence.js';
import { GRID_METERS, gridCell, snapLocation, type Precision } from '../../policy/snap-location.js';

/**
 * Privacy invariant 3 (DESIGN.md): location is snapped to a fixed grid (RFC
 * 6772 §6.5.2 style), so repeated reads cannot be averaged back to the true
 * point.
 */
const grids = ['city', 'km', '100m'] as const;
const precisions: readonly Precision[] = [...grids, 'exact'];
const METERS_PER_DEGREE = 111_319.49;

const latArb = fc.double({ min: -90, max: 90, noNaN: true });
const lonArb = fc.double({ min: -180, max: 180, noNaN: true });
const accuracyArb = fc.double({ min: 0, max: 100_000, noNaN: true });
const gridArb = fc.constantFrom(...grids);

/** Deterministic PRNG for the jitter clouds (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` fixes scattered uniformly within `meters` (per axis) of a point. */
function jitter(latitude: number, longitude: number, meters: number, count: number, seed: number): Array<[number, number]> {
  const random = prng(seed);
  const out: Array<[number, number]> = [];
  for (let i = 0; i < count; i++) {
    const dLat = ((random() * 2 - 1) * meters) / METERS_PER_DEGREE;
    const dLon = ((random() * 2 - 1) * meters) / (METERS_PER_DEGREE * Math.cos((latitude * Math.PI) / 180));
    out.push([latitude + dLat, longitude + dLon]);
  }
  return out;
}

const key = (s: { latitude: number; longitude: number; radiusMeters: number }) => `${s.latitude},${s.longitude},${s.radiusMeters}`;

t.test('known points', async (t) => {
  // Next to the grid's anchor: the centre of the first cell. Bands are d = cell / 111,319.49 degrees;
  // a column is d at the equator, widened so a whole number of columns fills 360 degrees.
  const d = (cell: number) => cell / METERS_PER_DEGREE;
  const r6 = (x: number) => Math.round(x * 1e6) / 1e6;
  const halfBand = (cell: number) => r6(d(cell) / 2);
  const halfColumn = (cell: number) => r6(360 / Math.floor(360 / d(cell)) / 2);
  const table: Array<[string, number, number, number, Precision, { latitude: number; longitude: number; radiusMeters: number }]> = [
    ['NE of 0/0, city', 0.0001, 0.0001, 5, 'city', { latitude: halfBand(10_000), longitude: halfColumn(10_000), radiusMeters: 7064 }],
    ['SW of 0/0, city', -0.0001, -0.0001, 5, 'city', { latitude: -halfBand(10_000), longitude: -halfColumn(10_000), radiusMeters: 7064 }],
    ['NE of 0/0, km', 0.0001, 0.0001, 5, 'km', { latitude: halfBand(1_000), longitude: halfColumn(1_000), radiusMeters: 707 }],
    ['NE of 0/0, 100m', 0.0001, 0.0001, 5, '100m', { latitude: halfBand(100), longitude: halfColumn(100), radiusMeters: 71 }],
    // Golden values (band floor(48.8566 / d) = 543 for city, centre 543.5 d = 48.823436).
    ['Paris, city', 48.8566, 2.3522, 12.3, 'city', { latitude: 48.823436, longitude: 2.388173, radiusMeters: 7066 }],
    ['Paris, km', 48.8566, 2.3522, 12.3, 'km', { latitude: 48.854877, longitude: 2.355127, radiusMeters: 707 }],
    ['Paris, 100m', 48.8566, 2.3522, 12.3, '100m', { latitude: 48.856225, longitude: 2.351777, radiusMeters: 71 }],
    ['Paris, exact', 48.8566, 2.3522, 12.3, 'exact', { latitude: 48.8566, longitude: 2.3522, radiusMeters: 13 }],
    ['Sydney, km', -33.8688, 151.2093, 20, 'km', { latitude: -33.870978, longitude: 151.204544, radiusMeters: 707 }],
    ['exact rounds to 6 decimals', 12.34567891, -98.76543219, 0.2, 'exact', { latitude: 12.345679, longitude: -98.765432, radiusMeters: 1 }],
    ['exact at the edges', 90, 180, 0, 'exact', { latitude: 90, longitude: 180, radiusMeters: 1 }],
    // An odd number of km columns at the equator: one of them is centred on the antimeridian.
    ['antimeridian, east side', 0.0001, 179.9999, 1, 'km', { latitude: halfBand(1_000), longitude: -180, radiusMeters: 707 }],
    ['antimeridian, west side', 0.0001, -179.9999, 1, 'km', { latitude: halfBand(1_000), longitude: -180, radiusMeters: 707 }],
    // The top city band (clipped at the pole) holds two columns of 180 degrees.
    ['north pole band, city', 89.95, 123.4, 3, 'city', { latitude: 89.96068, longitude: 90, radiusMeters: 9777 }],
    ['south pole, city', -90, -180, 3, 'city', { latitude: -89.96068, longitude: -90, radiusMeters: 9777 }],
    // The top 100m band is one cell: longitude reported as 0.
    ['north pole, 100m', 89.9999, 50, 3, '100m', { latitude: 89.999757, longitude: 0, radiusMeters: 82 }],
  ];
  for (const [name, lat, lon, accuracy, precision, expected] of table) t.same(snapLocation(lat, lon, accuracy, precision), expected, name);
});

t.test('edges: latitude ±90 and longitude ±180 stay in range and are deterministic', async (t) => {
  for (const precision of precisions) {
    for (const [lat, lon] of [[90, 180], [90, -180], [-90, 180], [-90, -180], [0, 180], [0, -180], [90, 0], [-90, 0]] as const) {
      const s = snapLocation(lat, lon, 10, precision);
      t.ok(s.latitude >= -90 && s.latitude <= 90 && s.longitude >= -180 && s.longitude <= 180, `${precision} ${lat},${lon} -> ${key(s)}`);
      t.same(snapLocation(lat, lon, 10, precision), s);
    }
    if (precision !== 'exact') t.same(snapLocation(12, 180, 10, precision), snapLocation(12, -180, 10, precision), `${precision}: 180 and -180 are one meridian`);
  }
  t.throws(() => snapLocation(90.0001, 0, 1, 'km'), RangeError);
  t.throws(() => snapLocation(Number.NaN, 0, 1, 'km'), RangeError);
  t.throws(() => snapLocation(0, Number.POSITIVE_INFINITY, 1, 'km'), RangeError);
  t.same(snapLocation(10, 190, 1, 'km'), snapLocation(10, -170, 1, 'km'), 'an out-of-range longitude wraps');
});

t.test('grid sizes', async (t) => {
  t.same(GRID_METERS, { city: 10_000, km: 1_000, '100m': 100 });
});

t.test('accuracy never leaks into a grid output', async () => {
  fc.assert(
    fc.property(latArb, lonArb, accuracyArb, accuracyArb, gridArb, (lat, lon, a1, a2, grid) => {
      return key(snapLocation(lat, lon, a1, grid)) === key(snapLocation(lat, lon, a2, grid));
    }),
    { numRuns: 500 },
  );
});

t.test('deterministic and within range', async () => {
  fc.assert(
    fc.property(latArb, lonArb, accuracyArb, fc.constantFrom(...precisions), (lat, lon, accuracy, precision) => {
      const s = snapLocation(lat, lon, accuracy, precision);
      if (key(s) !== key(snapLocation(lat, lon, accuracy, precision))) return false;
      if (!(s.latitude >= -90 && s.latitude <= 90 && s.longitude >= -180 && s.longitude <= 180)) return false;
      if (!Number.isInteger(s.radiusMeters) || s.radiusMeters < 1) return false;
      // Six decimals at most.
      return Math.round(s.latitude * 1e6) / 1e6 === s.latitude && Math.round(s.longitude * 1e6) / 1e6 === s.longitude;
    }),
    { numRuns: 2000 },
  );
});

t.test('every point of a cell gives the identical output', async () => {
  const inside = fc.double({ min: 0.001, max: 0.999, noNaN: true });
  fc.assert(
    fc.property(latArb, lonArb, gridArb, inside, inside, (lat, lon, grid, fy, fx) => {
      const cell = gridCell(lat, lon, grid);
      const otherLat = cell.south + fy * (cell.north - cell.south);
      const otherLon = cell.west + fx * (cell.east - cell.west);
      const other = gridCell(otherLat, otherLon, grid);
      if (other.band !== cell.band || other.column !== cell.column) return false;
      return key(snapLocation(otherLat, otherLon, 1, grid)) === key(snapLocation(lat, lon, 1, grid));
    }),
    { numRuns: 2000 },
  );
});

t.test('the snapped point is within radiusMeters of the true point', async () => {
  fc.assert(
    fc.property(latArb, lonArb, accuracyArb, gridArb, (lat, lon, accuracy, grid) => {
      const s = snapLocation(lat, lon, accuracy, grid);
      return distanceMeters(lat, lon, s.latitude, s.longitude) <= s.radiusMeters;
    }),
    { numRuns: 5000 },
  );
  // Exact: only the 6-decimal rounding moves the point (at most ~0.08 m), under the 1 m minimum.
  fc.assert(
    fc.property(latArb, lonArb, accuracyArb, (lat, lon, accuracy) => {
      const s = snapLocation(lat, lon, accuracy, 'exact');
      return distanceMeters(lat, lon, s.latitude, s.longitude) <= Math.min(s.radiusMeters, 0.1);
    }),
    { numRuns: 1000 },
  );
});

t.test('a coarser precision never gives a smaller radius', async () => {
  fc.assert(
    fc.property(latArb, lonArb, fc.double({ min: 0, max: 50, noNaN: true }), (lat, lon, accuracy) => {
      const [city, km, m100, exact] = (['city', 'km', '100m', 'exact'] as const).map((p) => snapLocation(lat, lon, accuracy, p).radiusMeters);
      // Exact reports the fix's own accuracy, so it is compared only for fixes better than the finest grid.
      return city! >= km! && km! >= m100! && m100! >= exact!;
    }),
    { numRuns: 2000 },
  );
});

t.test('averaging many reads of a jittering point does not converge on it', async (t) => {
  // Away from the poles (where every column meets) a cloud much smaller than a cell touches at most 4 cells.
  fc.assert(
    fc.property(fc.double({ min: -85, max: 85, noNaN: true }), lonArb, gridArb, fc.integer(), (lat, lon, grid, seed) => {
      const cloud = jitter(lat, lon, GRID_METERS[grid] / 100, 1000, seed);
      const outputs = new Set(cloud.map(([a, b]) => key(snapLocation(a, b, 5, grid))));
      return outputs.size >= 1 && outputs.size <= 4;
    }),
    { numRuns: 60 },
  );

  // A point well inside its cell: every one of 1000 jittered reads is the same report, so the mean of
  // 10 reads and of 1000 reads is the cell centre, as far from the true point as a single read.
  for (const grid of grids) {
    const d = GRID_METERS[grid] / METERS_PER_DEGREE;
    const trueLat = 40 * d + 0.2 * d; // 30% of a cell south of the band's centre
    const probe = gridCell(trueLat, 0, grid);
    const trueLon = probe.west + 0.8 * (probe.east - probe.west); // 30% of a cell east of the column's centre
    const reads = jitter(trueLat, trueLon, GRID_METERS[grid] / 100, 1000, 42).map(([a, b]) => snapLocation(a, b, 3, grid));
    t.equal(new Set(reads.map(key)).size, 1, `${grid}: one distinct output`);
    const mean = (n: number) => {
      const some = reads.slice(0, n);
      return [some.reduce((s, r) => s + r.latitude, 0) / n, some.reduce((s, r) => s + r.longitude, 0) / n] as const;
    };
    const [lat10, lon10] = mean(10);
    const [lat1000, lon1000] = mean(1000);
    const error10 = distanceMeters(trueLat, trueLon, lat10, lon10);
    const error1000 = distanceMeters(trueLat, trueLon, lat1000, lon1000);
    t.ok(Math.abs(error1000 - error10) < 0.01, `${grid}: 1000 reads (${error1000.toFixed(1)} m off) are no better than 10 (${error10.toFixed(1)} m)`);
    t.ok(error1000 >= 0.4 * GRID_METERS[grid], `${grid}: the mean stays ${error1000.toFixed(0)} m from the true point`);
  }
});
