// The check rules every conformance runner shares (tests/conformance/README.md): paths are
// dot-separated keys, integer segments index lists (negative from the end), "*" maps over a
// list; a number equals a numeric string (proto JSON writes int64 as text).

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
const MISSING = Symbol("missing");
type Found = Json | typeof MISSING;

export function resolve(value: Json, path: string): Found {
  return resolveSegs(value, path === "" ? [] : path.split("."));
}

function resolveSegs(value: Json, segs: string[]): Found {
  if (segs.length === 0) {
    return value;
  }
  const [head, ...rest] = segs;
  if (head === "*") {
    if (!Array.isArray(value)) {
      return MISSING;
    }
    return value.map((v) => resolveSegs(v, rest)).filter((v): v is Json => v !== MISSING);
  }
  if (Array.isArray(value) && /^-?\d+$/.test(head)) {
    let i = Number(head);
    if (i < 0) {
      i += value.length;
    }
    return i >= 0 && i < value.length ? resolveSegs(value[i], rest) : MISSING;
  }
  if (value !== null && typeof value === "object" && !Array.isArray(value) && head in value) {
    return resolveSegs(value[head], rest);
  }
  return MISSING;
}

function toNumber(v: Found): number | undefined {
  if (typeof v === "number") {
    return v;
  }
  if (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v))) {
    return Number(v);
  }
  return undefined;
}

export function equal(a: Json, b: Json): boolean {
  if (typeof a === "number" || typeof b === "number") {
    const x = toNumber(a);
    const y = toNumber(b);
    return x !== undefined && y !== undefined &&
      (x === y || Math.abs(x - y) <= 1e-9 * Math.max(Math.abs(x), Math.abs(y)));
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => equal(v, b[i]));
  }
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object" &&
      !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && equal(a[k], b[k]));
  }
  return a === b;
}

function length(v: Found): number | undefined {
  if (v === MISSING) {
    return 0; // proto JSON omits empty repeated fields
  }
  if (Array.isArray(v) || typeof v === "string") {
    return v.length;
  }
  if (v !== null && typeof v === "object") {
    return Object.keys(v).length;
  }
  return undefined;
}

function short(v: Found): string {
  if (v === MISSING) {
    return "<missing>";
  }
  const s = JSON.stringify(v);
  return s.length > 160 ? s.slice(0, 157) + "..." : s;
}

/** Applies one check to a step outcome; "" means it holds. */
export function check(outcome: Json, spec: { [key: string]: Json }, steps: Record<string, Json>): string {
  const path = String(spec.path);
  const op = String(spec.op);
  const actual = resolve(outcome, path);
  let expected: Found = spec.value ?? null;
  let want = short(expected);
  if (typeof spec.ref === "string") {
    const [id, ...rest] = spec.ref.split(".");
    expected = id in steps ? resolve(steps[id], rest.join(".")) : MISSING;
    if (expected === MISSING) {
      return `${path} ${op} ref ${spec.ref}: the reference is missing`;
    }
    want = `ref ${spec.ref}`;
  }
  let ok: boolean;
  switch (op) {
    case "present":
      ok = actual !== MISSING && actual !== null;
      break;
    case "absent":
      ok = actual === MISSING;
      break;
    case "eq":
      ok = actual !== MISSING && equal(actual, expected as Json);
      break;
    case "gt":
    case "ge":
    case "lt": {
      const x = toNumber(actual);
      const y = toNumber(expected);
      ok = x !== undefined && y !== undefined && (op === "gt" ? x > y : op === "ge" ? x >= y : x < y);
      break;
    }
    case "len_eq":
    case "len_ge": {
      const n = length(actual);
      const w = toNumber(expected);
      ok = n !== undefined && w !== undefined && (op === "len_eq" ? n === w : n >= w);
      break;
    }
    case "contains":
      if (Array.isArray(actual)) {
        ok = actual.some((v) => equal(v, expected as Json));
      } else {
        ok = typeof actual === "string" && typeof expected === "string" && actual.includes(expected);
      }
      break;
    default:
      return `${path}: unknown op ${JSON.stringify(op)}`;
  }
  return ok ? "" : `${path} ${op} ${want}: got ${short(actual)}`;
}
