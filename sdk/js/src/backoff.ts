// Reconnect pacing: capped exponential backoff with jitter, so a cluster that drops many clients
// at once does not get them all back in the same millisecond.

export interface BackoffOptions {
  /** First delay, ms (default 100). */
  min?: number;
  /** Longest delay, ms (default 5000). */
  max?: number;
}

/** backoff is the delay before retry number n (from 0): between half and all of min·2^n, capped at max. */
export function backoff(n: number, { min = 100, max = 5000 }: BackoffOptions = {}): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(n, 30));
  return ceiling * (0.5 + Math.random() / 2);
}
