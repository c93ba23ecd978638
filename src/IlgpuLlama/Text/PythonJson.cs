using System.Globalization;
using System.Text;
using System.Text.Json;

namespace IlgpuLlama.Text;

/// <summary>
/// JSON written as the Hugging Face chat templates' <c>tojson</c> filter writes it (Python's
/// <c>json.dumps(x, ensure_ascii=False, indent=indent)</c>): <c>", "</c> and <c>": "</c> between items
/// on one line, or <c>","</c> and a new line indented by <c>indent</c> spaces; keys in their given
/// order; non-ASCII characters as they are; <c>"</c>, <c>\</c> and control characters escaped. Numbers
/// are written as the input spelled them (Python would print a float such as <c>1e5</c> as <c>100000.0</c>).
/// </summary>
internal static class PythonJson
{
    public static string Dumps(JsonElement value, int? indent = null)
    {
        var text = new StringBuilder();
        Write(text, value, indent, 0);
        return text.ToString();
    }

    /// <summary>A string as a JSON string literal.</summary>
    public static string Dumps(string value)
    {
        var text = new StringBuilder();
        WriteString(text, value);
        return text.ToString();
    }

    static void Write(StringBuilder text, JsonElement value, int? indent, int depth)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Object:
                WriteContainer(text, '{', '}', value.EnumerateObject().Select(p => ((string?)p.Name, p.Value)), indent, depth, isObject: true);
                break;
            case JsonValueKind.Array:
                WriteContainer(text, '[', ']', value.EnumerateArray().Select(v => ((string?)null, v)), indent, depth, isObject: false);
                break;
            case JsonValueKind.String:
                WriteString(text, value.GetString()!);
                break;
            case JsonValueKind.Number:
                text.Append(value.GetRawText());
                break;
            case JsonValueKind.True:
                text.Append("true");
                break;
            case JsonValueKind.False:
                text.Append("false");
                break;
            default:
                text.Append("null");
                break;
        }
    }

    static void WriteContainer(StringBuilder text, char open, char close, IEnumerable<(string? Key, JsonElement Value)> items, int? indent, int depth, bool isObject)
    {
        text.Append(open);
        bool any = false;
        foreach (var (key, item) in items)
        {
            if (any)
                text.Append(indent is null ? ", " : ",");
            if (indent is int n)
                text.Append('\n').Append(' ', n * (depth + 1));
            if (isObject)
            {
                WriteString(text, key!);
                text.Append(": ");
            }
            Write(text, item, indent, depth + 1);
            any = true;
        }
        if (any && indent is int m)
            text.Append('\n').Append(' ', m * depth);
        text.Append(close);
    }

    static void WriteString(StringBuilder text, string value)
    {
        text.Append('"');
        foreach (char ch in value)
        {
            switch (ch)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case '\b': text.Append("\\b"); break;
                case '\f': text.Append("\\f"); break;
                default:
                    if (ch < ' ')
                        text.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        text.Append(ch);
                    break;
            }
        }
        text.Append('"');
    }
}
