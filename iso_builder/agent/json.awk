# netbootd agent: flatten one JSON document into "path<TAB>value" lines (busybox awk).
#
#   {"action": "wipe", "disks": ["vdb"], "poll": {"interval": 5}}
#   ->  action<TAB>wipe   disks.0<TAB>vdb   poll.interval<TAB>5
#
# Strings are unescaped (\uXXXX outside printable ASCII becomes "?"); control
# characters become spaces, so every value is one line; null is the empty value.  Keys keep only
# [A-Za-z0-9_-] (anything else becomes "_").  Nesting deeper than 16, a syntax
# error or more than 64 KiB of input: nothing is printed, exit status 2.
# The output is data for `awk -F '\t'` lookups, never for eval.

BEGIN { RS = "\001"; doc = ""; bad = 0 }
{ doc = doc $0 "\n" }
END {
  n = length(doc)
  if (n > 65536) exit 2
  pos = 1
  out = ""
  value("", 0)
  ws()
  if (bad || pos <= n) exit 2
  printf "%s", out
}

function fail() { bad = 1; pos = n + 1 }

function ws() {
  while (pos <= n && index(" \t\r\n", substr(doc, pos, 1)) > 0) pos++
}

function emit(path, v) {
  gsub(/[[:cntrl:]]/, " ", v)
  out = out path "\t" v "\n"
}

function join(path, k) { return path == "" ? k : path "." k }

function value(path, depth,   c) {
  if (bad) return
  if (depth > 16) { fail(); return }
  ws()
  c = substr(doc, pos, 1)
  if (c == "{") obj(path, depth)
  else if (c == "[") arr(path, depth)
  else if (c == "\"") emit(path, str())
  else lit(path)
}

function obj(path, depth,   k, c) {
  pos++
  ws()
  if (substr(doc, pos, 1) == "}") { pos++; return }
  while (!bad) {
    ws()
    if (substr(doc, pos, 1) != "\"") { fail(); return }
    k = str()
    gsub(/[^A-Za-z0-9_-]/, "_", k)
    ws()
    if (substr(doc, pos, 1) != ":") { fail(); return }
    pos++
    value(join(path, k), depth + 1)
    ws()
    c = substr(doc, pos, 1)
    pos++
    if (c == "}") return
    if (c != ",") { fail(); return }
  }
}

function arr(path, depth,   i, c) {
  pos++
  ws()
  if (substr(doc, pos, 1) == "]") { pos++; return }
  i = 0
  while (!bad) {
    value(join(path, i), depth + 1)
    i++
    ws()
    c = substr(doc, pos, 1)
    pos++
    if (c == "]") return
    if (c != ",") { fail(); return }
  }
}

function str(   s, c, rest) {
  pos++
  s = ""
  while (pos <= n) {
    rest = substr(doc, pos)
    if (match(rest, /^[^"\\]+/)) {
      s = s substr(rest, 1, RLENGTH)
      pos += RLENGTH
      continue
    }
    c = substr(doc, pos, 1)
    if (c == "\"") { pos++; return s }
    # a backslash escape
    c = substr(doc, pos + 1, 1)
    if (c == "u") {
      s = s uchar(substr(doc, pos + 2, 4))
      pos += 6
    } else {
      if (c == "n" || c == "r" || c == "t" || c == "b" || c == "f") s = s " "
      else if (c == "\"" || c == "\\" || c == "/") s = s c
      else { fail(); return "" }
      pos += 2
    }
  }
  fail()
  return ""
}

function uchar(h,   i, v, d) {
  v = 0
  for (i = 1; i <= 4; i++) {
    d = index("0123456789abcdef", tolower(substr(h, i, 1)))
    if (d == 0) { fail(); return "" }
    v = v * 16 + d - 1
  }
  if (v < 32) return " "
  if (v < 127) return sprintf("%c", v)
  return "?"
}

function lit(path,   rest, v) {
  rest = substr(doc, pos)
  if (match(rest, /^(true|false|null|-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)/)) {
    v = substr(rest, 1, RLENGTH)
    emit(path, v == "null" ? "" : v)
    pos += RLENGTH
  } else fail()
}
