import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import net.spy.memcached.AddrUtil;
import net.spy.memcached.ConnectionFactory;
import net.spy.memcached.DefaultConnectionFactory;
import net.spy.memcached.DefaultHashAlgorithm;
import net.spy.memcached.KetamaConnectionFactory;
import net.spy.memcached.KetamaNodeKeyFormatter;
import net.spy.memcached.MemcachedClient;

/**
 * Reads keys with spymemcached at its default settings (its default
 * transcoder) and reports what it returned (see readers_test.go). Run as a
 * single-file program: java -cp spymemcached.jar Read.java MODE SERVERS
 * KEYS_FILE. MODE ketama reads SERVERS (host:port,...) with spymemcached's
 * ketama in libmemcached's node key format; single reads one server.
 * KEYS_FILE holds one "key hexvalue" per line.
 */
public class Read {
  public static void main(String[] args) throws IOException {
    ConnectionFactory cf = new DefaultConnectionFactory();
    if (args[0].equals("ketama")) {
      cf = new KetamaConnectionFactory(DefaultConnectionFactory.DEFAULT_OP_QUEUE_LEN,
          DefaultConnectionFactory.DEFAULT_READ_BUFFER_SIZE, DefaultConnectionFactory.DEFAULT_OP_QUEUE_MAX_BLOCK_TIME,
          DefaultHashAlgorithm.KETAMA_HASH, KetamaNodeKeyFormatter.Format.LIBMEMCACHED, new HashMap<>());
    }
    MemcachedClient c = new MemcachedClient(cf, AddrUtil.getAddresses(args[1].replace(",", " ")));
    Map<String, byte[]> want = new LinkedHashMap<>();
    for (String line : Files.readAllLines(Path.of(args[2]))) {
      if (line.isBlank()) {
        continue;
      }
      String[] f = line.split(" ");
      want.put(f[0], hex(f[1]));
    }
    Map<String, Map<String, Object>> report = new TreeMap<>();
    List<String> keys = new ArrayList<>(want.keySet());
    for (int i = 0; i < keys.size(); i += 100) {
      List<String> chunk = keys.subList(i, Math.min(i + 100, keys.size()));
      Map<String, Object> got = c.getBulk(chunk);
      for (String k : chunk) {
        String kind = k.split("-", 2)[0];
        Map<String, Object> r = report.computeIfAbsent(kind, x -> newEntry());
        add(r, "checked");
        Object v = got.get(k);
        if (v == null) {
          add(r, "missing");
          continue;
        }
        @SuppressWarnings("unchecked")
        Map<String, Integer> types = (Map<String, Integer>) r.get("types");
        types.merge(v.getClass().getName(), 1, Integer::sum);
        byte[] w = want.get(k);
        boolean exact = (v instanceof String s && Arrays.equals(s.getBytes(StandardCharsets.UTF_8), w))
            || (v instanceof byte[] bs && Arrays.equals(bs, w));
        // What a String of the value decoded as UTF-8 is: invalid sequences
        // become U+FFFD.
        boolean decoded = v instanceof String s && s.equals(new String(w, StandardCharsets.UTF_8));
        if (exact) {
          add(r, "ok");
        } else {
          add(r, "wrong");
        }
        if (decoded) {
          add(r, "utf8_decoded");
        }
      }
    }
    c.shutdown();
    System.out.println(json(report));
  }

  static Map<String, Object> newEntry() {
    Map<String, Object> r = new TreeMap<>();
    for (String n : new String[] {"checked", "ok", "missing", "wrong", "utf8_decoded"}) {
      r.put(n, 0);
    }
    r.put("types", new TreeMap<String, Integer>());
    return r;
  }

  static void add(Map<String, Object> r, String name) {
    r.put(name, (Integer) r.get(name) + 1);
  }

  static byte[] hex(String s) {
    byte[] b = new byte[s.length() / 2];
    for (int i = 0; i < b.length; i++) {
      b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
    }
    return b;
  }

  static String json(Object o) {
    if (o instanceof Map<?, ?> m) {
      StringBuilder sb = new StringBuilder("{");
      for (Map.Entry<?, ?> e : m.entrySet()) {
        if (sb.length() > 1) {
          sb.append(',');
        }
        sb.append('"').append(e.getKey()).append("\":").append(json(e.getValue()));
      }
      return sb.append('}').toString();
    }
    return String.valueOf(o);
  }
}
