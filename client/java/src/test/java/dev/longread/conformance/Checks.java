package dev.longread.conformance;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.regex.Pattern;

/**
 * The check rules every conformance runner shares (tests/conformance/README.md): paths are
 * dot-separated keys, integer segments index lists (negative from the end), "*" maps over a list;
 * a number equals a numeric string (proto JSON writes int64 as text). Values are plain JSON:
 * Map, List, String, Double, Boolean, null.
 */
final class Checks {
  static final Object MISSING = new Object();
  private static final Pattern INDEX = Pattern.compile("-?\\d+");

  private Checks() {}

  static Object resolve(Object value, String path) {
    return resolve(value, path.isEmpty() ? List.of() : List.of(path.split("\\.", -1)));
  }

  private static Object resolve(Object value, List<String> segs) {
    if (segs.isEmpty()) {
      return value;
    }
    String head = segs.get(0);
    List<String> rest = segs.subList(1, segs.size());
    if (head.equals("*")) {
      if (!(value instanceof List<?> list)) {
        return MISSING;
      }
      List<Object> out = new ArrayList<>();
      for (Object item : list) {
        Object r = resolve(item, rest);
        if (r != MISSING) {
          out.add(r);
        }
      }
      return out;
    }
    if (value instanceof List<?> list && INDEX.matcher(head).matches()) {
      int i = Integer.parseInt(head);
      if (i < 0) {
        i += list.size();
      }
      return i >= 0 && i < list.size() ? resolve(list.get(i), rest) : MISSING;
    }
    if (value instanceof Map<?, ?> map && map.containsKey(head)) {
      return resolve(map.get(head), rest);
    }
    return MISSING;
  }

  static Double number(Object v) {
    if (v instanceof Number n) {
      return n.doubleValue();
    }
    if (v instanceof String s) {
      try {
        return Double.parseDouble(s.trim());
      } catch (NumberFormatException e) {
        return null;
      }
    }
    return null;
  }

  static boolean equal(Object a, Object b) {
    if (a instanceof Number || b instanceof Number) {
      Double x = number(a);
      Double y = number(b);
      return x != null && y != null
          && (x.equals(y) || Math.abs(x - y) <= 1e-9 * Math.max(Math.abs(x), Math.abs(y)));
    }
    if (a instanceof Map<?, ?> ma && b instanceof Map<?, ?> mb) {
      if (ma.size() != mb.size()) {
        return false;
      }
      for (Map.Entry<?, ?> e : ma.entrySet()) {
        if (!mb.containsKey(e.getKey()) || !equal(e.getValue(), mb.get(e.getKey()))) {
          return false;
        }
      }
      return true;
    }
    if (a instanceof List<?> la && b instanceof List<?> lb) {
      if (la.size() != lb.size()) {
        return false;
      }
      for (int i = 0; i < la.size(); i++) {
        if (!equal(la.get(i), lb.get(i))) {
          return false;
        }
      }
      return true;
    }
    return Objects.equals(a, b);
  }

  private static Integer length(Object v) {
    if (v == MISSING) {
      return 0; // proto JSON omits empty repeated fields
    }
    if (v instanceof List<?> l) {
      return l.size();
    }
    if (v instanceof String s) {
      return s.length();
    }
    if (v instanceof Map<?, ?> m) {
      return m.size();
    }
    return null;
  }

  private static String shortText(Object v) {
    if (v == MISSING) {
      return "<missing>";
    }
    String s = String.valueOf(v);
    return s.length() > 160 ? s.substring(0, 157) + "..." : s;
  }

  /** Applies one check to a step outcome; "" means it holds. */
  static String check(Object outcome, Map<String, Object> spec, Map<String, Object> steps) {
    String path = String.valueOf(spec.get("path"));
    String op = String.valueOf(spec.get("op"));
    Object actual = resolve(outcome, path);
    Object expected = spec.get("value");
    String want = shortText(expected);
    if (spec.get("ref") instanceof String ref) {
      int dot = ref.indexOf('.');
      String id = dot < 0 ? ref : ref.substring(0, dot);
      String rest = dot < 0 ? "" : ref.substring(dot + 1);
      expected = steps.containsKey(id) ? resolve(steps.get(id), rest) : MISSING;
      if (expected == MISSING) {
        return path + " " + op + " ref " + ref + ": the reference is missing";
      }
      want = "ref " + ref;
    }
    boolean ok;
    switch (op) {
      case "present" -> ok = actual != MISSING && actual != null;
      case "absent" -> ok = actual == MISSING;
      case "eq" -> ok = actual != MISSING && equal(actual, expected);
      case "gt", "ge", "lt" -> {
        Double x = number(actual);
        Double y = number(expected);
        ok = x != null && y != null
            && (op.equals("gt") ? x > y : op.equals("ge") ? x >= y : x < y);
      }
      case "len_eq", "len_ge" -> {
        Integer n = length(actual);
        Double w = number(expected);
        ok = n != null && w != null && (op.equals("len_eq") ? n == w.doubleValue() : n >= w);
      }
      case "contains" -> {
        if (actual instanceof List<?> list) {
          final Object e = expected;
          ok = list.stream().anyMatch(v -> equal(v, e));
        } else {
          ok = actual instanceof String s && expected instanceof String sub && s.contains(sub);
        }
      }
      default -> {
        return path + ": unknown op \"" + op + "\"";
      }
    }
    return ok ? "" : path + " " + op + " " + want + ": got " + shortText(actual);
  }
}
