using System.Net;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Tests.Constraints;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Issue 22 item 3 through the HTTP API: response_format json_object and json_schema on the demo model
/// (random weights), every reply parsed and validated by JsonSchema.Net (<see cref="JsonOracle"/>),
/// streamed or not, with n choices; unsupported schemas are a 400 naming their keywords.
/// </summary>
public sealed class StructuredOutputServerTests(DemoServer demo) : IClassFixture<DemoServer>
{
    const string Person = """{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}, "required": ["name", "age"], "additionalProperties": false}""";
    const string Flags = """{"type": "object", "properties": {"ok": {"type": "boolean"}, "none": {"type": "null"}, "score": {"type": "number"}, "kind": {"const": "x"}}, "required": ["ok", "none", "kind"]}""";

    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    async Task<(HttpStatusCode Status, JsonElement Json)> Post(string path, string json)
    {
        using var response = await demo.Http.PostAsync(path, Body(json));
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    static string Format(string schema) => "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"t\", \"strict\": true, \"schema\": " + schema + "}}";

    [Theory]
    [InlineData(Person, 1)]
    [InlineData(Flags, 2)]
    public async Task Json_schema_replies_parse_and_validate(string schema, int seed)
    {
        var (status, json) = await Post("v1/completions", $$"""{"prompt": "JSON:", "max_tokens": 60, "temperature": 1, "seed": {{seed}}, "n": 3, "response_format": {{Format(schema)}}}""");
        Assert.True(status == HttpStatusCode.OK, json.GetRawText());
        foreach (var choice in json.GetProperty("choices").EnumerateArray())
            JsonOracle.AssertValid(schema, choice.GetProperty("text").GetString()!);
    }

    [Fact]
    public async Task Json_object_in_chat_and_streamed()
    {
        var (status, json) = await Post("v1/chat/completions", """{"messages": [{"role": "user", "content": "x"}], "max_tokens": 24, "temperature": 1, "seed": 3, "response_format": {"type": "json_object"}}""");
        Assert.True(status == HttpStatusCode.OK, json.GetRawText());
        JsonOracle.AssertValid(null, json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!);

        using var response = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/completions")
        {
            Content = Body($$"""{"prompt": "JSON:", "max_tokens": 40, "temperature": 1, "seed": 4, "stream": true, "response_format": {{Format(Flags)}}}"""),
        }, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new StringBuilder();
        while (await reader.ReadLineAsync() is { } line && line != "data: [DONE]")
            if (line.StartsWith("data: ", StringComparison.Ordinal))
                text.Append(JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
        JsonOracle.AssertValid(Flags, text.ToString());
    }

    [Theory]
    [InlineData("""{"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "string", "pattern": "^a", "minLength": 2}}}""", "response_format.json_schema.schema", "pattern")]
    [InlineData("""{"type": "json_schema", "json_schema": {"name": "t"}}""", "response_format.json_schema", "schema")]
    [InlineData("""{"type": "yaml"}""", "response_format.type", "json_object")]
    [InlineData("""[1]""", "response_format", "json_schema")]
    public async Task Bad_response_formats_are_a_400_naming_the_field(string format, string param, string inMessage)
    {
        var (status, json) = await Post("v1/completions", $$"""{"prompt": "x", "max_tokens": 8, "response_format": {{format}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var e = json.GetProperty("error");
        Assert.Equal(param, e.GetProperty("param").GetString());
        Assert.Contains(inMessage, e.GetProperty("message").GetString());
    }

    [Fact]
    public async Task A_constraint_the_request_cannot_hold_is_a_400()
    {
        // ignore_eos would let the text run past its end; 1 token cannot hold the shortest object "{}".
        var (status, _) = await Post("v1/completions", """{"prompt": "x", "max_tokens": 8, "ignore_eos": true, "response_format": {"type": "json_object"}}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var (tight, json) = await Post("v1/completions", """{"prompt": "x", "max_tokens": 1, "response_format": {"type": "json_object"}}""");
        Assert.Equal(HttpStatusCode.BadRequest, tight);
        Assert.Equal("max_tokens", json.GetProperty("error").GetProperty("param").GetString());
    }
}
