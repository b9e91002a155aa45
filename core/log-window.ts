/**
 * At most one log line per window, with how many were held back since the
 * last one: a failing dependency or a misbehaving device must not flood the
 * logs, and the line that does go out says how much it stands for. Times
 * are given by the caller (`now`, ms), never read here.
 */
export class LogWindow {
  private loggedAt = -Infinity;
  private held = 0;

  constructor(private readonly windowMs: number) {}

  /**
   * Whether to log now. If so, the number of occurrences held back since
   * the last line (0 for the first); if not, undefined, and this one is
   * counted.
   */
  take(now: number): number | undefined {
    if (now - this.loggedAt < this.windowMs) {
      this.held += 1;
      return undefined;
    }
    const held = this.held;
    this.loggedAt = now;
    this.held = 0;
    return held;
  }

  /** Starts over: the next occurrence is logged at once (a failure after a recovery). */
  reset(): void {
    this.loggedAt = -Infinity;
    this.held = 0;
  }
}
