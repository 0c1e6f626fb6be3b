<?php
// Reads keys with php-memcached at its default settings, libmemcached's
// ketama (Memcached::OPT_LIBKETAMA_COMPATIBLE) over the servers, and
// reports what it returned (see readers_test.go).
//
// Usage: php read.php SERVERS KEYS_FILE, SERVERS host:port:weight,...,
// KEYS_FILE one "key hexvalue" per line.
$m = new Memcached();
$m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
$servers = [];
foreach (explode(",", $argv[1]) as $s) {
    [$host, $port, $weight] = explode(":", $s);
    $servers[] = [$host, (int)$port, (int)$weight];
}
$m->addServers($servers);
$want = [];
foreach (file($argv[2], FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
    [$k, $v] = explode(" ", $line);
    $want[$k] = hex2bin($v);
}
$report = [];
foreach (array_chunk(array_keys($want), 100) as $chunk) {
    $got = $m->getMulti($chunk, Memcached::GET_EXTENDED);
    if ($got === false) {
        fwrite(STDERR, "getMulti: " . $m->getResultMessage() . "\n");
        exit(1);
    }
    foreach ($chunk as $k) {
        $kind = explode("-", $k, 2)[0];
        if (!isset($report[$kind])) {
            $report[$kind] = ["checked" => 0, "ok" => 0, "missing" => 0, "wrong" => 0, "types" => [], "examples" => [], "user_flags" => []];
        }
        $r = &$report[$kind];
        $r["checked"]++;
        if (!array_key_exists($k, $got)) {
            $r["missing"]++;
            continue;
        }
        $v = $got[$k]["value"];
        $type = gettype($v);
        $r["types"][$type] = ($r["types"][$type] ?? 0) + 1;
        // The high 16 bits of the item flags are php-memcached's user
        // flags: the coordinator's term.
        $r["user_flags"][(string)$got[$k]["flags"]] = true;
        if ($v === $want[$k]) {
            $r["ok"]++;
        } else {
            $r["wrong"]++;
            if (count($r["examples"]) < 3) {
                $r["examples"][] = $k . ": " . substr(bin2hex((string)$v), 0, 100);
            }
        }
        unset($r);
    }
}
foreach ($report as &$r) {
    $r["user_flags"] = array_keys($r["user_flags"]);
    $r["types"] = (object)$r["types"];
}
echo json_encode($report), "\n";
