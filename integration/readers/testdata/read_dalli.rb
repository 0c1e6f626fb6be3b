# Reads keys with Dalli at its default settings, on one server (Dalli's
# own ring is not libmemcached's ketama), and reports what it returned
# (see readers_test.go).
#
# Usage: ruby read_dalli.rb SERVER KEYS_FILE, KEYS_FILE one "key hexvalue"
# per line.
require 'dalli'
require 'json'

Dalli.logger.level = Logger::WARN
client = Dalli::Client.new(ARGV[0])
want = {}
File.foreach(ARGV[1]) do |line|
  k, v = line.split
  want[k] = [v].pack('H*')
end
report = {}
want.keys.each_slice(100) do |chunk|
  got = client.get_multi(*chunk)
  chunk.each do |k|
    kind = k.split('-', 2)[0]
    r = (report[kind] ||= { 'checked' => 0, 'ok' => 0, 'missing' => 0, 'wrong' => 0, 'types' => {}, 'examples' => [] })
    r['checked'] += 1
    unless got.key?(k)
      r['missing'] += 1
      next
    end
    v = got[k]
    type = v.is_a?(String) ? "String(#{v.encoding})" : v.class.name
    r['types'][type] = (r['types'][type] || 0) + 1
    if v.is_a?(String) && v.b == want[k]
      r['ok'] += 1
    else
      r['wrong'] += 1
      r['examples'] << "#{k}: #{v.inspect[0, 100]}" if r['examples'].size < 3
    end
  end
end
puts JSON.generate(report)
