import t from 'tap';
import { LogWindow } from '../../core/log-window.js';

/** One log line per window, saying how many were held back; reset starts over. */
t.test('the first occurrence is logged, the rest of the window held back and counted in the next line', async (t) => {
  const window = new LogWindow(10_000);
  t.equal(window.take(1_000), 0, 'first: logged, nothing held back');
  t.equal(window.take(2_000), undefined);
  t.equal(window.take(10_999), undefined, 'still inside the window');
  t.equal(window.take(11_000), 2, 'the window is over: logged, two held back');
  t.equal(window.take(11_001), undefined);
  window.reset();
  t.equal(window.take(11_002), 0, 'after a reset: logged at once, the held-back count forgotten');
});
