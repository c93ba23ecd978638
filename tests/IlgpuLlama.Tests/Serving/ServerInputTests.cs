using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Engine;
using IlgpuLlama.Server;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Issue 17's hostile server inputs, one row each (docs/reliability.md, "Issue 17: the server"): text
/// that is not Unicode, max_tokens near 2^31, parameters the server does not implement, methods,
/// Content-Type (CSRF), Host (DNS rebinding) and the auth scheme. Every error is OpenAI's shape.
/// </summary>
public sealed class ServerInputTests(DemoServer demo) : IClassFixture<DemoServer>
{
    /// <summary>A body as bytes: "&lt;FF&gt;" stands for the raw byte 0xFF (not UTF-8), the rest is UTF-8.</summary>
    static byte[] Bytes(string body)
    {
        var parts = body.Split("<FF>");
        var bytes = new List<byte>();
        for (int i = 0; i < parts.Length; i++)
        {
            if (i > 0)
                bytes.Add(0xFF);
            bytes.AddRange(Encoding.UTF8.GetBytes(parts[i]));
        }
        return bytes.ToArray();
    }

    static async Task<(HttpStatusCode Status, string Text, HttpResponseMessage Response)> Send(HttpClient http, string method, string path, string? contentType, string? body,
        Action<HttpRequestMessage>? setup = null)
    {
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (body is not null)
        {
            request.Content = new ByteArrayContent(Bytes(body));
            if (contentType is not null)
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        }
        setup?.Invoke(request);
        var response = await http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    /// <summary>An OpenAI error: message, type, param and code present, param as expected, no stack trace.</summary>
    static void AssertError(string text, string? param, string? code = null)
    {
        var e = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(e.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(e.GetProperty("type").GetString()));
        Assert.True(e.TryGetProperty("code", out var c));
        Assert.True(e.TryGetProperty("param", out var p));
        Assert.Equal(param, p.ValueKind == JsonValueKind.Null ? null : p.GetString());
        if (code is not null)
            Assert.Equal(code, c.GetString());
        Assert.DoesNotContain("   at ", text); // no stack trace
        Assert.DoesNotContain("Exception", text);
        Assert.DoesNotContain("MaxNewTokens", text);
        Assert.DoesNotContain("MaxSeqLen", text);
    }

    const string Json = "application/json";
    const string C = "v1/completions";
    const string Chat = "v1/chat/completions";

    /// <summary>id, method, path, Content-Type, body, expected status, the error's param (null: none or a success).</summary>
    public static TheoryData<string, string, string, string?, string?, int, string?> Rows => new()
    {
        // Text that is not Unicode (a lone surrogate escape, raw bytes that are not UTF-8): 400 naming the field.
        { "R01", "POST", C, Json, """{"prompt": "a\ud800b", "max_tokens": 1}""", 400, "prompt" },
        { "R02", "POST", C, Json, """{"prompt": "a<FF>b", "max_tokens": 1}""", 400, "prompt" },
        { "R03", "POST", C, Json, """{"prompt": ["\udc00"], "max_tokens": 1}""", 400, "prompt" },
        { "R04", "POST", C, Json, """{"model": "\ud800", "prompt": "x", "max_tokens": 1}""", 400, "model" },
        { "R05", "POST", C, Json, """{"model": "de<FF>mo", "prompt": "x", "max_tokens": 1}""", 400, "model" },
        { "R06", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi \ud800"}], "max_tokens": 1}""", 400, "messages[0].content" },
        { "R07", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi <FF>"}], "max_tokens": 1}""", 400, "messages[0].content" },
        { "R08", "POST", Chat, Json, """{"messages": [{"role": "\ud800", "content": "hi"}], "max_tokens": 1}""", 400, "messages[0].role" },
        { "R09", "POST", Chat, Json, """{"messages": [{"role": "us<FF>er", "content": "hi"}], "max_tokens": 1}""", 400, "messages[0].role" },
        { "R10", "POST", Chat, Json, """{"messages": [{"role": "user", "content": [{"type": 5, "text": "hi"}]}], "max_tokens": 1}""", 400, "messages[0].content[0]" },
        { "R11", "POST", Chat, Json, """{"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}], "max_tokens": 1}""", 400, "messages[0].content[0].text" },
        { "R12", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "stop": ["ok", "\ud800"]}""", 400, "stop" },
        // A model that is not a string.
        { "R13", "POST", C, Json, """{"model": 5, "prompt": "x", "max_tokens": 1}""", 400, "model" },
        { "R14", "POST", C, Json, """{"model": ["demo"], "prompt": "x", "max_tokens": 1}""", 400, "model" },
        // max_tokens near 2^31: prompt + max_tokens computed in long.
        { "R15", "POST", C, Json, """{"prompt": "x", "max_tokens": 2147483647}""", 400, "max_tokens" },
        { "R16", "POST", C, Json, """{"prompt": "Hello world", "max_tokens": 2147483645, "stream": true}""", 400, "max_tokens" },
        { "R17", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2147483600}""", 400, "max_completion_tokens" },
        // Parameters the server does not implement: 400 naming them unless the value is the no-op.
        { "R18", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "logprobs": 3}""", 400, "logprobs" },
        { "R19", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "logprobs": 21}""", 400, "logprobs" },
        { "R20", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "top_logprobs": 3}""", 400, "top_logprobs" },
        { "R21", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "tools": [{"type": "function", "function": {"name": "f g"}}]}""", 400, "tools[0]" },
        { "R22", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "tool_choice": "required"}""", 400, "tool_choice" },
        { "R23", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "string", "format": "email"}}}}""", 400, "response_format.json_schema.schema" },
        { "R24", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "logit_bias": {"50": 1e308}}""", 400, "logit_bias" },
        { "R25", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "echo": "yes"}""", 400, "echo" },
        { "R26", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "best_of": 3}""", 400, "best_of" },
        { "R27", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "suffix": "the end"}""", 400, "suffix" },
        { "R28", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "n": 0}""", 400, "n" },
        { "R29", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "presence_penalty": 0.5}""", 400, "presence_penalty" },
        { "R30", "POST", C, Json, """{"prompt": "x", "max_tokens": 1, "n": 1, "best_of": 1, "logprobs": null, "echo": false, "suffix": null, "logit_bias": {}, "top_logprobs": 0, "presence_penalty": 0, "frequency_penalty": 0.0}""", 200, null },
        { "R31", "POST", Chat, Json, """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "logprobs": false, "tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "logit_bias": null}""", 200, null },
        // Cross-site simple POSTs (CSRF): only application/json bodies are read.
        { "R32", "POST", C, "text/plain", """{"prompt": "x", "max_tokens": 1}""", 415, null },
        { "R33", "POST", C, "application/x-www-form-urlencoded", """{"prompt": "x", "max_tokens": 1}""", 415, null },
        { "R34", "POST", Chat, "multipart/form-data; boundary=x", """{"messages": [{"role": "user", "content": "hi"}]}""", 415, null },
        { "R35", "POST", C, null, """{"prompt": "x", "max_tokens": 1}""", 415, null },
        { "R36", "POST", C, "application/json; charset=utf-8", """{"prompt": "x", "max_tokens": 1}""", 200, null },
        // Methods: the generation endpoints take POST (405 with Allow), /health answers HEAD.
        { "R37", "GET", C, null, null, 405, null },
        { "R38", "GET", Chat, null, null, 405, null },
        { "R39", "DELETE", "health", null, null, 405, null },
        { "R40", "HEAD", "health", null, null, 200, null },
    };

    [Theory]
    [MemberData(nameof(Rows))]
    public async Task A_hostile_input_gets_its_status_and_names_its_field(string id, string method, string path, string? contentType, string? body, int status, string? param)
    {
        var (actual, text, response) = await Send(demo.Http, method, path, contentType, body);
        using (response)
        {
            Assert.True(status == (int)actual, $"{id}: {(int)actual} {text}");
            if (method == "HEAD")
                Assert.Equal("", text);
            else if (status == 200)
                Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("choices").GetArrayLength() == 1, text);
            else
                AssertError(text, param);
            if (status == 405)
                Assert.Equal(path.Contains("completions") ? "POST" : "GET, HEAD", string.Join(", ", response.Content.Headers.Allow));
            if (status == 415)
                Assert.Contains("Content-Type: application/json", text);
            if (param is "max_tokens" or "max_completion_tokens")
                Assert.Contains("the context length of 128", text);
        }
        // The server is still fine.
        var (after, afterText, r2) = await Send(demo.Http, "POST", C, Json, """{"prompt": "still fine", "max_tokens": 1}""");
        r2.Dispose();
        Assert.True(after == HttpStatusCode.OK, afterText);
    }

    /// <summary>id, Host header ("" for the server's own address), whether the server was given --allowed-host my-llama.test, expected status.</summary>
    public static TheoryData<string, string, int> HostRows => new()
    {
        { "R41", "evil.example", 400 },
        { "R42", "evil.example:8080", 400 },
        { "R43", "localhost", 200 },
        { "R44", "LOCALHOST:1234", 200 },
        { "R45", "127.0.0.1", 200 },
        { "R46", "[::1]:8080", 200 },
        { "R47", "10.1.2.3:8080", 200 },
        { "R48", "my-llama.test:8080", 200 },
        { "R49", "My-Llama.Test", 200 },
        { "R50", "my-llama.test.evil.example", 400 },
    };

    [Theory]
    [MemberData(nameof(HostRows))]
    public async Task A_host_header_outside_the_allow_list_is_refused(string id, string host, int status)
    {
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", AllowedHosts = ["my-llama.test"] });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        foreach (var (method, path, body) in new[] { ("GET", "health", (string?)null), ("POST", C, """{"prompt": "x", "max_tokens": 1}""") })
        {
            var (actual, text, response) = await Send(http, method, path, body is null ? null : Json, body, r => r.Headers.Host = host);
            response.Dispose();
            Assert.True(status == (int)actual, $"{id} {method} {path}: {(int)actual} {text}");
            if (status != 200)
            {
                AssertError(text, null, "invalid_host");
                Assert.Contains("--allowed-host", text);
            }
        }
    }

    /// <summary>id, Authorization header, expected status (the server's key is "sekrit").</summary>
    public static TheoryData<string, string?, int> AuthRows => new()
    {
        { "R51", "Bearer sekrit", 200 },
        { "R52", "bearer sekrit", 200 },
        { "R53", "BEARER sekrit", 200 },
        { "R54", "Bearer  sekrit ", 200 },
        { "R55", "Bearer wrong", 401 },
        { "R56", "Basic sekrit", 401 },
        { "R57", "sekrit", 401 },
        { "R58", null, 401 },
    };

    [Theory]
    [MemberData(nameof(AuthRows))]
    public async Task The_bearer_scheme_is_case_insensitive_and_the_key_is_not(string id, string? authorization, int status)
    {
        await using var server = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = "sekrit" });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        var (actual, text, response) = await Send(http, "POST", C, Json, """{"prompt": "x", "max_tokens": 1}""",
            r => { if (authorization is not null) r.Headers.TryAddWithoutValidation("Authorization", authorization); });
        response.Dispose();
        Assert.True(status == (int)actual, $"{id}: {(int)actual} {text}");
        if (status == 401)
            AssertError(text, null, "invalid_api_key");
    }

    [Theory]
    [InlineData("R59", "")]
    [InlineData("R60", "   ")]
    public async Task An_empty_api_key_is_refused_at_startup(string id, string key)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = key }));
        Assert.True(e.Message.StartsWith("--api-key is empty", StringComparison.Ordinal), id + ": " + e.Message);
        var r = CliHarness.Run("serve", "--model", demo.ModelDir, "--device", "cpu", "--port", "0", "--api-key", key);
        Assert.Equal(1, r.ExitCode);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1 && lines[0].StartsWith("error: --api-key is empty", StringComparison.Ordinal), id + ": " + r.Err);
        Assert.Equal("", r.Out);
    }
}

/// <summary>docs/reliability.md's issue 17 table lists every row of the tests above, each naming its test.</summary>
public sealed class ServerInputDocsTests
{
    [Fact]
    public void The_reliability_table_has_one_row_per_test_case_naming_its_test()
    {
        string root = Path.GetFullPath(Path.Combine(GoldenFixture.Directory, "..", "..", ".."));
        string doc = File.ReadAllText(Path.Combine(root, "docs", "reliability.md"));
        string section = doc[doc.IndexOf("## Issue 17: the server", StringComparison.Ordinal)..];
        var rows = System.Text.RegularExpressions.Regex.Matches(section, @"^\| (R\d+) \|.*\| ([A-Za-z_.]+) \|$", System.Text.RegularExpressions.RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
        var cases = new List<(string Id, string Test)>();
        cases.AddRange(ServerInputTests.Rows.Select(r => ((string)r[0], "ServerInputTests." + nameof(ServerInputTests.A_hostile_input_gets_its_status_and_names_its_field))));
        cases.AddRange(ServerInputTests.HostRows.Select(r => ((string)r[0], "ServerInputTests." + nameof(ServerInputTests.A_host_header_outside_the_allow_list_is_refused))));
        cases.AddRange(ServerInputTests.AuthRows.Select(r => ((string)r[0], "ServerInputTests." + nameof(ServerInputTests.The_bearer_scheme_is_case_insensitive_and_the_key_is_not))));
        cases.Add(("R59", "ServerInputTests." + nameof(ServerInputTests.An_empty_api_key_is_refused_at_startup)));
        cases.Add(("R60", "ServerInputTests." + nameof(ServerInputTests.An_empty_api_key_is_refused_at_startup)));
        foreach (var (id, test) in cases)
        {
            Assert.True(rows.TryGetValue(id, out var named), $"{id} has no row in docs/reliability.md");
            Assert.Equal(test, named);
        }
        Assert.True(rows.Count >= 60, $"{rows.Count} rows");
        Assert.Equal(rows.Count, rows.Keys.Distinct().Count());
    }
}

/// <summary>Requests that shutdown cancels after the grace period say so: an error event and [DONE], or a 503.</summary>
public sealed class ServerFailureTests
{
    [Fact]
    public async Task A_stream_cut_after_its_first_byte_ends_with_an_error_event_and_done_and_a_plain_request_gets_503()
    {
        using var dir = new DemoModelDir();
        using var engine = LlamaEngine.Load(dir.Path, new LlamaEngineOptions
        {
            Device = DeviceKind.Cpu,
            Engine = new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 1024 },
        });
        // No grace: shutdown cancels at once whatever runs. Each request would need 900 tokens
        // (900: minutes on the CPU), so neither can finish first however loaded the machine.
        var server = await OpenAiServer.StartAsync(engine, new ServerOptions { Port = 0, ModelId = "demo", ShutdownGrace = TimeSpan.Zero });
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(5) };
        static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");
        using var streamed = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = Body(new { messages = new[] { new { role = "user", content = "Once upon" } }, max_tokens = 900, temperature = 0, stream = true, ignore_eos = true }),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, streamed.StatusCode);
        using var reader = new StreamReader(await streamed.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: ", await reader.ReadLineAsync()); // the role chunk: the stream has started
        var plain = http.PostAsync("v1/completions", Body(new { prompt = "Hello", max_tokens = 900, temperature = 0, ignore_eos = true }));
        for (int i = 0; engine.Advanced.Scheduler.RunningCount < 2; i++)
        {
            Assert.True(i < 30000, "the second request never started");
            await Task.Delay(10);
        }
        await server.StopAsync();

        var events = (await reader.ReadToEndAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e.Trim()).ToArray();
        Assert.True(events.Length >= 2, string.Join(" | ", events));
        Assert.Equal("data: [DONE]", events[^1]);
        var error = JsonDocument.Parse(events[^2]["data: ".Length..]).RootElement.GetProperty("error");
        Assert.Equal("shutting_down", error.GetProperty("code").GetString());
        Assert.Contains("grace period", error.GetProperty("message").GetString());
        Assert.True(error.TryGetProperty("param", out _) && error.TryGetProperty("type", out _));

        using var plainResponse = await plain;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, plainResponse.StatusCode);
        var plainError = JsonDocument.Parse(await plainResponse.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("shutting_down", plainError.GetProperty("code").GetString());
        await server.DisposeAsync();
    }
}
