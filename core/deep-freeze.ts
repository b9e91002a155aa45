/**
 * Freezes an object and everything it holds. Objects already frozen are
 * taken as deeply frozen and not walked again (shared, memoized parts).
 */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
