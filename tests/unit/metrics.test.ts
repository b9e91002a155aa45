import t from 'tap';
import { Metrics } from '../../core/metrics.js';

t.test('a histogram renders cumulative buckets, +Inf, sum and count per label set (Prometheus text format 0.0.4)', async (t) => {
  const metrics = new Metrics();
  metrics.histogram('h_seconds', 'A histogram', [0.1, 1, 0.01]);
  const a = metrics.series('h_seconds', { route: '/a' });
  for (const v of [0.005, 0.01, 0.5, 3]) a(v);
  metrics.observe('h_seconds', 0.2, { route: '/b' });
  t.equal(
    metrics.render(),
    [
      '# HELP h_seconds A histogram',
      '# TYPE h_seconds histogram',
      'h_seconds_bucket{le="0.01",route="/a"} 2',
      'h_seconds_bucket{le="0.1",route="/a"} 2',
      'h_seconds_bucket{le="1",route="/a"} 3',
      'h_seconds_bucket{le="+Inf",route="/a"} 4',
      'h_seconds_sum{route="/a"} 3.515',
      'h_seconds_count{route="/a"} 4',
      'h_seconds_bucket{le="0.01",route="/b"} 0',
      'h_seconds_bucket{le="0.1",route="/b"} 0',
      'h_seconds_bucket{le="1",route="/b"} 1',
      'h_seconds_bucket{le="+Inf",route="/b"} 1',
      'h_seconds_sum{route="/b"} 0.2',
      'h_seconds_count{route="/b"} 1',
      '',
    ].join('\n'),
    'a value equal to a bound falls in that bucket (le)',
  );
  const all = metrics.observed('h_seconds');
  t.equal(all.count, 5);
  t.ok(Math.abs(all.sum - 3.715) < 1e-9);
  t.same(metrics.observed('h_seconds', { route: '/b' }), { count: 1, sum: 0.2 });
  t.throws(() => metrics.observe('undeclared', 1), /not declared/);
});
