using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Constraints;
using IlgpuLlama.Tests.Constraints;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Tool definitions and structured-output settings the server cannot honour are a 400 naming the
/// request's own field (an adversarial sweep found them silently relaxed or blamed on the wrong field);
/// a function without parameters is called with <c>{}</c>.
/// </summary>
public sealed class ToolInputTests(ChatPageServer demo) : IClassFixture<ChatPageServer>
{
    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    const string Messages = """ "messages": [{"role": "user", "content": "Go"}] """;

    async Task<(HttpStatusCode Status, JsonElement Root)> Post(string json)
    {
        using var response = await demo.Http.PostAsync("v1/chat/completions", Body(json));
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    public static TheoryData<string, string, string> Refused => new()
    {
        // strict: a schema the grammar cannot enforce
        { """ "tools": [{"type": "function", "function": {"name": "a", "strict": true, "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}}}], "tool_choice": "required", "max_tokens": 60 """,
            "tools[0].function.parameters", "unsupported JSON Schema keywords: minimum" },
        { """ "tools": [{"type": "function", "function": {"name": "a", "description": 5}}], "max_tokens": 4 """, "tools[0]", "description of function 'a' must be a string" },
        { """ "tools": [{"type": "function", "function": {"name": "a", "strict": "yes"}}], "max_tokens": 4 """, "tools[0]", "strict of function 'a' must be true or false" },
        { """ "tools": [{"type": "function", "function": {"name": "météo"}}], "max_tokens": 4 """, "tools[0]", "1 to 64 ASCII letters, digits, underscores or dashes, got \"m\\u00E9t\\u00E9o\"" },
        // the engine's structured-output checks, in the request's own fields
        { """ "tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": "required", "max_completion_tokens": 3 """, "max_completion_tokens", "max_completion_tokens 3 is too few for a required tool call" },
        { """ "response_format": {"type": "json_object"}, "max_tokens": 1 """, "max_tokens", "max_tokens 1 is too few for response_format" },
        { """ "tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": "required", "ignore_eos": true, "max_tokens": 60 """, "ignore_eos", "ignore_eos cannot be used with a required tool call" },
        { """ "response_format": {"type": "json_object"}, "ignore_eos": true, "max_tokens": 8 """, "ignore_eos", "ignore_eos cannot be used with response_format" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task A_setting_that_cannot_be_honoured_is_a_400_naming_its_field(string fields, string param, string message)
    {
        var (status, root) = await Post($"{{{Messages}, {fields}}}");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = root.GetProperty("error");
        Assert.Equal(param, e.GetProperty("param").GetString());
        Assert.Contains(message, e.GetProperty("message").GetString());
    }

    [Fact]
    public async Task A_function_without_parameters_is_called_with_an_empty_object_and_strict_with_a_supported_schema_is_taken()
    {
        var (status, root) = await Post("{" + Messages + """, "tools": [{"type": "function", "function": {"name": "now"}}], "tool_choice": "required", "max_tokens": 40, "temperature": 1, "seed": 2}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var call = root.GetProperty("choices")[0].GetProperty("message").GetProperty("tool_calls")[0].GetProperty("function");
        Assert.Equal("now", call.GetProperty("name").GetString());
        Assert.Equal("{}", call.GetProperty("arguments").GetString());

        const string schema = """{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}""";
        (status, root) = await Post("{" + Messages + """, "tools": [{"type": "function", "function": {"name": "count", "strict": true, "parameters": """ + schema + """}}], "tool_choice": "required", "max_tokens": 40, "temperature": 1, "seed": 2}""");
        Assert.Equal(HttpStatusCode.OK, status);
        JsonOracle.AssertValid(schema, root.GetProperty("choices")[0].GetProperty("message").GetProperty("tool_calls")[0].GetProperty("function").GetProperty("arguments").GetString()!);
    }

    [Fact]
    public void A_false_property_is_never_written_and_unsupported_false_schemas_say_so()
    {
        var grammar = JsonGrammar.FromSchema("""{"type": "object", "properties": {"a": false, "b": {"type": "integer"}}}""");
        var a = new JsonAutomaton(grammar);
        Assert.False(Encoding.UTF8.GetBytes("""{"a":1}""").All(a.Step));
        var only = JsonGrammar.FromSchema("""{"type": "object", "properties": {"a": false}}""");
        Assert.Equal(2, only.MinBytes);
        var empty = new JsonAutomaton(only);
        Assert.True(Encoding.UTF8.GetBytes("{}").All(empty.Step) && empty.IsComplete);
        Assert.Contains("property \"a\" is required, and its schema false accepts no value",
            Assert.Throws<JsonSchemaException>(() => JsonGrammar.FromSchema("""{"type": "object", "properties": {"a": false}, "required": ["a"]}""")).Message);
        Assert.Contains("items: false (an array that must stay empty) is not supported",
            Assert.Throws<JsonSchemaException>(() => JsonGrammar.FromSchema("""{"type": "array", "items": false}""")).Message);
        Assert.True(JsonGrammar.ParametersSupported(ChatTool.Function("f", null, null), out _));
        Assert.False(JsonGrammar.ParametersSupported(ChatTool.Function("f", null, """{"type": "object", "properties": {"s": {"type": "string", "format": "date"}}}"""), out string? why));
        Assert.Contains("format", why);
    }
}
