package scproto

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ValidChannel reports why a channel name is unacceptable, or "" when it is fine: it must
// be non-empty valid UTF-8 within the length limit, without NUL or a leading control byte
// (those are reserved for the mesh's own topics).
func ValidChannel(ch string, maxLen int) string {
	switch {
	case ch == "":
		return "Channel name must not be empty"
	case len(ch) > maxLen:
		return "Channel name is longer than the limit of " + strconv.Itoa(maxLen) + " bytes"
	case !utf8.ValidString(ch):
		return "Channel name is not valid UTF-8"
	case ch[0] < 0x20:
		return "Channel name must not start with a control character"
	}
	for i := 0; i < len(ch); i++ {
		if ch[i] == 0 {
			return "Channel name must not contain NUL"
		}
	}
	return ""
}

// ChannelName decodes a JSON string holding a channel name. encoding/json silently turns
// invalid UTF-8 and lone surrogate escapes into U+FFFD; a name that gained a U+FFFD that the
// client did not send is reported as not valid UTF-8.
func ChannelName(raw json.RawMessage) (name string, ok bool, invalidUTF8 bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false, false
	}
	if name, ok = Unquote(raw); !ok {
		return "", false, false
	}
	if strings.ContainsRune(name, utf8.RuneError) && !bytes.Contains(raw, []byte("\xef\xbf\xbd")) &&
		!bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`)) {
		return name, true, true
	}
	return name, true, false
}

// CheckChannel decodes a channel name from JSON and validates it: the name, and why it is
// refused ("" when it is not).
func CheckChannel(raw json.RawMessage, maxLen int) (string, string) {
	ch, _, bad := ChannelName(raw)
	if bad {
		return ch, "Channel name is not valid UTF-8"
	}
	return ch, ValidChannel(ch, maxLen)
}
