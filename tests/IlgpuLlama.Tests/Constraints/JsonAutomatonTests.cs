using System.Text;
using IlgpuLlama.Constraints;

namespace IlgpuLlama.Tests.Constraints;

/// <summary>The byte automaton alone: which texts it accepts, refuses, and how far each is from complete.</summary>
public sealed class JsonAutomatonTests
{
    /// <summary>Feeds the text; null when a byte is refused, else whether the text is complete.</summary>
    internal static bool? Feed(JsonGrammar grammar, string text) => Feed(grammar, Encoding.UTF8.GetBytes(text));

    internal static bool? Feed(JsonGrammar grammar, byte[] bytes)
    {
        var a = new JsonAutomaton(grammar);
        foreach (byte b in bytes)
            if (!a.Step(b))
                return null;
        return a.IsComplete;
    }

    const string Person = """
        {"type": "object", "title": "a person",
         "properties": {
           "name": {"type": "string"},
           "age": {"type": "integer"},
           "height": {"type": "number"},
           "role": {"enum": ["admin", "user", 3, null]},
           "tags": {"type": "array", "items": {"type": "string"}},
           "ok": {"type": "boolean"},
           "none": {"type": "null"},
           "kind": {"const": "person"}
         },
         "required": ["name", "kind"], "additionalProperties": false}
        """;

    [Theory]
    [InlineData("""{"name":"Ann","kind":"person"}""")]
    [InlineData("""{"name":"","age":-12,"height":0.5e+10,"role":"admin","tags":[],"ok":true,"none":null,"kind":"person"}""")]
    [InlineData("""{"name":"\u00e9\n\"x\"","role":3,"tags":["a","b"],"ok":false,"kind":"person"}""")]
    [InlineData("""{"name":"snow ☃ and 🦙","height":-0,"role":null,"kind":"person"}""")]
    public void Accepts_valid_texts_of_a_schema(string text) =>
        Assert.True(Feed(JsonGrammar.FromSchema(Person), text));

    [Theory]
    [InlineData("""{"kind":"person","name":"Ann"}""")] // out of schema order
    [InlineData("""{"name":"Ann"}""")] // "kind" missing: not complete
    [InlineData("""{"name":"Ann","extra":1,"kind":"person"}""")] // not a listed property
    [InlineData("""{"name":"Ann","age":1.5,"kind":"person"}""")] // integer with a fraction
    [InlineData("""{"name":"Ann","age":01,"kind":"person"}""")] // leading zero
    [InlineData("""{"name":"Ann","role":"guest","kind":"person"}""")] // not in the enum
    [InlineData("""{"name":"Ann","kind":"persons"}""")] // const
    [InlineData("""{"name":"a\qb","kind":"person"}""")] // bad escape
    [InlineData("""{"name":"\ud800","kind":"person"}""")] // lone surrogate escape
    [InlineData("""{ "name":"Ann","kind":"person"}""")] // whitespace
    [InlineData("""{"name":"Ann","ok":True,"kind":"person"}""")]
    [InlineData("""{"name":"Ann","kind":"person"},""")]
    [InlineData("""{"name":"Ann","tags":[1],"kind":"person"}""")]
    [InlineData("""{"name":"Ann","height":1.,"kind":"person"}""")]
    public void Refuses_or_leaves_incomplete_invalid_texts(string text) =>
        Assert.NotEqual(true, Feed(JsonGrammar.FromSchema(Person), text));

    [Fact]
    public void Strings_must_be_valid_utf8_and_free_of_raw_control_bytes()
    {
        var s = JsonGrammar.FromSchema("""{"type":"string"}""");
        Assert.True(Feed(s, [(byte)'"', 0xC3, 0xA9, (byte)'"']));
        Assert.Null(Feed(s, [(byte)'"', 0xC3, (byte)'"'])); // truncated character
        Assert.Null(Feed(s, [(byte)'"', 0xC0, 0x80])); // overlong
        Assert.Null(Feed(s, [(byte)'"', 0xED, 0xA0])); // UTF-8 surrogate
        Assert.Null(Feed(s, [(byte)'"', 0xF5])); // past U+10FFFF
        Assert.Null(Feed(s, [(byte)'"', 0x0A])); // raw newline
        Assert.True(Feed(s, "\"\\u00e9\\uFFFF\\/\""));
    }

    [Fact]
    public void Json_object_takes_any_object_without_repeated_keys()
    {
        var g = JsonGrammar.AnyObject;
        Assert.True(Feed(g, """{}"""));
        Assert.True(Feed(g, """{"a":[1,{"b":null}],"":"x","c":{"a":true}}"""));
        Assert.Null(Feed(g, """{"a":1,"a":2}"""));
        Assert.Null(Feed(g, """{"":1,"":2}"""));
        Assert.Null(Feed(g, """[1]"""));
        Assert.Null(Feed(g, """{"a":1,}"""));
        Assert.Null(Feed(g, """{"\u0061":1}""")); // keys take no \u escape, so equal keys are equal bytes
    }

    [Fact]
    public void Numbers_follow_the_json_grammar_within_the_digit_limits()
    {
        var n = JsonGrammar.FromSchema("""{"type":"number"}""");
        foreach (var ok in new[] { "0", "-0", "12", "1.25", "1e5", "-1.5E-07", "123456789012345" })
            Assert.True(Feed(n, ok));
        foreach (var bad in new[] { "-", "1.", "1e", "1e+", "+1", "01", ".5", "1234567890123456", "1e123" })
            Assert.NotEqual(true, Feed(n, bad));
        var i = JsonGrammar.FromSchema("""{"type":"integer"}""");
        Assert.True(Feed(i, "-42"));
        Assert.Null(Feed(i, "4.0"));
        Assert.Null(Feed(i, "4e1"));
    }

    [Fact]
    public void Type_arrays_and_free_objects_with_a_value_schema()
    {
        var g = JsonGrammar.FromSchema("""{"type":"object","additionalProperties":{"type":["integer","null"]}}""");
        Assert.True(Feed(g, """{"x":1,"y":null}"""));
        Assert.Null(Feed(g, """{"x":"1"}"""));
        var empty = JsonGrammar.FromSchema("""{"type":"object","additionalProperties":false}""");
        Assert.True(Feed(empty, "{}"));
        Assert.Null(Feed(empty, """{"a":1}"""));
    }

    [Fact]
    public void Min_bytes_falls_by_one_along_the_shortest_completion()
    {
        var g = JsonGrammar.FromSchema(Person);
        var a = new JsonAutomaton(g);
        string shortest = """{"name":"","kind":"person"}""";
        Assert.Equal(Encoding.UTF8.GetByteCount(shortest), g.MinBytes);
        int expected = g.MinBytes;
        foreach (byte b in Encoding.UTF8.GetBytes(shortest))
        {
            Assert.Equal(expected, a.MinBytesToComplete);
            Assert.True(a.Step(b));
            expected--;
        }
        Assert.Equal(0, a.MinBytesToComplete);
        Assert.True(a.IsComplete);
    }

    [Fact]
    public void A_schema_from_a_parsed_document_compiles_the_same()
    {
        using var doc = System.Text.Json.JsonDocument.Parse(Person);
        var g = JsonGrammar.FromSchema(doc.RootElement);
        Assert.Equal(JsonGrammar.FromSchema(Person).MinBytes, g.MinBytes);
        Assert.True(Feed(g, """{"name":"Ann","kind":"person"}"""));
    }

    [Fact]
    public void Unsupported_keywords_are_all_named_in_one_message()
    {
        var e = Assert.Throws<UnsupportedSchemaException>(() => JsonGrammar.FromSchema("""
            {"type":"object","properties":{"a":{"type":"string","pattern":"x+","minLength":2},
             "b":{"oneOf":[{"type":"string"}]}},"$ref":"#/x","description":"fine"}
            """));
        Assert.Equal(["pattern (at /properties/a)", "minLength (at /properties/a)", "oneOf (at /properties/b)", "$ref (at /)"], e.Keywords);
        Assert.Contains("unsupported JSON Schema keywords: pattern (at /properties/a), minLength (at /properties/a), oneOf (at /properties/b), $ref (at /)", e.Message);
        Assert.Contains("supported: type, properties, required, additionalProperties, items, enum, const", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Theory]
    [InlineData("{", "not valid JSON")]
    [InlineData("""{"type":"text"}""", "invalid JSON schema at /type: type must be one of")]
    [InlineData("""{"enum":[]}""", "enum must be a non-empty array")]
    [InlineData("""{"type":"integer","enum":["a"]}""", "no value of enum/const satisfies")]
    [InlineData("""{"properties":{"a":false},"required":["a"]}""", "invalid JSON schema at /properties/a: property \"a\" is required, and its schema false accepts no value")]
    [InlineData("""false""", "invalid JSON schema at /: the schema false accepts no value")]
    [InlineData("""{"properties":{},"required":["a"],"additionalProperties":false}""", "required property \"a\" is not in properties")]
    [InlineData("[1]", "a schema must be an object or a boolean")]
    public void Malformed_schemas_get_a_one_line_message(string schema, string message)
    {
        var e = Assert.Throws<JsonSchemaException>(() => JsonGrammar.FromSchema(schema));
        Assert.IsNotType<UnsupportedSchemaException>(e);
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
