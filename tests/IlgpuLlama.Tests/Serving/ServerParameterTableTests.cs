using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using IlgpuLlama.Server;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// The README's parameter table is the server's: every parameter it marks refused is refused (a 400
/// naming it, for a value that is not the no-op), and the server refuses no parameter the table does
/// not list as refused.
/// </summary>
public sealed class ServerParameterTableTests(DemoServer demo) : IClassFixture<DemoServer>
{
    static IReadOnlyList<string> RefusedInReadme()
    {
        string root = Path.GetFullPath(Path.Combine(GoldenFixture.Directory, "..", "..", ".."));
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        int start = readme.IndexOf("| parameter | endpoint | status |", StringComparison.Ordinal);
        Assert.True(start >= 0, "README.md has no parameter table");
        var rows = readme[start..].Split('\n').Skip(2).TakeWhile(l => l.TrimStart().StartsWith('|')).ToList();
        return rows.Select(r => r.Split('|', StringSplitOptions.TrimEntries)).Where(c => c[3].StartsWith("refused", StringComparison.Ordinal))
            .SelectMany(c => Regex.Matches(c[1], "`([a-z_]+)`").Select(m => m.Groups[1].Value)).ToList();
    }

    [Fact]
    public void The_table_lists_exactly_the_refused_parameters() =>
        Assert.Equal(OpenAiEndpoints.RefusedParameters.Order(), RefusedInReadme().Order());

    public static TheoryData<string, string, string> Refused => new()
    {
        { "best_of", "/v1/completions", "2" },
        { "suffix", "/v1/completions", "\"x\"" },
        { "presence_penalty", "/v1/chat/completions", "0.5" },
        { "frequency_penalty", "/v1/completions", "0.5" },
        { "functions", "/v1/chat/completions", "[{\"name\": \"f\"}]" },
        { "function_call", "/v1/chat/completions", "\"auto\"" },
        { "modalities", "/v1/chat/completions", "[\"text\", \"audio\"]" },
        { "audio", "/v1/chat/completions", "{\"voice\": \"alloy\", \"format\": \"wav\"}" },
        { "web_search_options", "/v1/chat/completions", "{}" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task A_refused_parameter_is_a_400_naming_it(string name, string path, string value)
    {
        Assert.Contains(name, OpenAiEndpoints.RefusedParameters);
        string prompt = path.Contains("chat") ? "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]" : "\"prompt\": \"hi\"";
        using var response = await demo.Http.PostAsync(path, new StringContent($"{{{prompt}, \"max_tokens\": 1, \"{name}\": {value}}}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var e = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal(name, e.GetProperty("param").GetString());
        Assert.Equal("unsupported_parameter", e.GetProperty("code").GetString());
    }
}
