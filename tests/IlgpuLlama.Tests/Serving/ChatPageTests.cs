using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Server;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Text;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;

namespace IlgpuLlama.Tests.Serving;

/// <summary>
/// Headless chromium driven by Selenium (Debian's chromium and chromium-driver; .ci/run installs them).
/// Missing, the tests that need it fail and say how to install them: CI has them, so a silent skip
/// would hide a page that no longer works.
/// </summary>
public sealed class HeadlessChromium : IDisposable
{
    public const string Install = "apt-get install -y chromium chromium-driver";

    readonly Lazy<ChromeDriver> driver = new(Start);

    public ChromeDriver Driver => driver.Value;

    static string? Which(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);

    static ChromeDriver Start()
    {
        string? chromedriver = Which("chromedriver");
        string? chromium = Which("chromium") ?? Which("chromium-browser") ?? Which("google-chrome");
        if (chromedriver is null || chromium is null)
            Assert.Fail($"the chat page's browser test needs chromium and chromedriver on PATH, and {(chromium is null ? "chromium" : "")}{(chromium is null && chromedriver is null ? " and " : "")}{(chromedriver is null ? "chromedriver" : "")} " +
                $"{(chromium is null && chromedriver is null ? "are" : "is")} missing; install them with: {Install} (Debian; bash .ci/run does this when they are missing)");
        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(chromedriver)!, Path.GetFileName(chromedriver));
        service.HideCommandPromptWindow = true;
        service.SuppressInitialDiagnosticInformation = true;
        var options = new ChromeOptions { BinaryLocation = chromium };
        options.AddArguments("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900", "--lang=en-US");
        return new ChromeDriver(service, options, TimeSpan.FromMinutes(3));
    }

    public void Dispose()
    {
        if (driver.IsValueCreated)
            driver.Value.Quit();
    }
}

/// <summary>
/// The demo model behind a server with a longer context than <see cref="DemoServer"/>'s: the chat
/// template takes about 100 positions a turn, the page's test has two, and Stop needs a long reply.
/// </summary>
public sealed class ChatPageServer() : DemoServerFixture(1024);

/// <summary>The chat page at / : served as a self-contained page, and used in a real browser against the demo model.</summary>
public sealed class ChatPageTests(ChatPageServer demo, HeadlessChromium chromium) : IClassFixture<ChatPageServer>, IClassFixture<HeadlessChromium>
{
    static readonly TimeSpan ReplyTimeout = TimeSpan.FromMinutes(3); // the demo model on a loaded 2-core CPU

    static StringContent Body(object value) => new(JsonSerializer.Serialize(value), Encoding.UTF8, "application/json");

    [Fact]
    public async Task The_page_is_one_self_contained_html_file_served_at_the_root()
    {
        using var response = await demo.Http.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("utf-8", response.Content.Headers.ContentType?.CharSet);
        string html = await response.Content.ReadAsStringAsync();
        Assert.Equal(ChatPage.Html, html);
        Assert.Contains("/v1/chat/completions", html);
        // No CDN, no font or script from elsewhere: the page works on a machine without internet.
        Assert.DoesNotMatch(new Regex(@"https?://|(src|href)\s*=\s*[""']//", RegexOptions.IgnoreCase), html);
        var csp = string.Join(";", response.Headers.GetValues("Content-Security-Policy"));
        Assert.Contains("default-src 'none'", csp);
        Assert.Contains("connect-src 'self'", csp);
        Assert.Matches("script-src 'sha256-[A-Za-z0-9+/]+=*'", csp);

        using var head = await demo.Http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());

        // Other methods: 405 with Allow, as every route of the server answers them.
        using var post = await demo.Http.PostAsync("/", Body(new { }));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
        Assert.Equal("GET, HEAD", string.Join(", ", post.Content.Headers.Allow));
        Assert.Contains("method_not_allowed", await post.Content.ReadAsStringAsync());

        // The DNS-rebinding guard covers the page too.
        using var rebound = new HttpRequestMessage(HttpMethod.Get, "/");
        rebound.Headers.Host = "attacker.example";
        using var refused = await demo.Http.SendAsync(rebound);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
    }

    [Fact]
    public async Task With_an_api_key_the_page_is_served_without_it_and_its_requests_carry_the_key()
    {
        await using var keyed = await OpenAiServer.StartAsync(demo.Engine, new ServerOptions { Port = 0, ModelId = "demo", ApiKey = "sekrit" });
        using var http = new HttpClient { BaseAddress = keyed.Address, Timeout = TimeSpan.FromMinutes(5) };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/v1/models")).StatusCode);

        var page = new Page(chromium.Driver, keyed.Address);
        page.Open();
        // The page found out that the server wants a key (GET /v1/models answered 401) and asks for it.
        await Until(() => page.Displayed("key-box"), TimeSpan.FromSeconds(30), "the API key field to appear");
        page.Type("api-key", "sekrit");
        page.Type("temperature", "0");
        page.Type("max-tokens", "3");
        page.Send("Hi");
        var state = await page.WaitForReply(ReplyTimeout);
        Assert.Null(state.Error);
        Assert.NotEmpty(state.Text);
        Assert.Contains("tokens/s", state.Speed);
        Assert.Equal("sekrit", chromium.Driver.ExecuteScript("return sessionStorage.getItem('ilgpu-llama-api-key')"));
    }

    [Fact]
    public async Task Typing_a_message_streams_the_reply_that_the_api_gives_and_shows_its_tokens_per_second()
    {
        const string message = "Hello! Who are you?";
        const int maxTokens = 8;
        var request = new { model = "demo", messages = new[] { new { role = "user", content = message } }, temperature = 0, max_tokens = maxTokens };
        using var response = await demo.Http.PostAsync("v1/chat/completions", Body(request));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string expected = json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!;
        int completionTokens = json.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        Assert.NotEmpty(expected);

        var page = new Page(chromium.Driver, demo.Server.Address);
        page.Open();
        await Until(() => page.Text("model").Contains("demo"), TimeSpan.FromSeconds(30), "the page to show the model from GET /v1/models");
        page.Type("temperature", "0");
        page.Type("max-tokens", maxTokens.ToString(System.Globalization.CultureInfo.InvariantCulture));
        page.Send(message);
        Assert.Equal(message, (string)chromium.Driver.ExecuteScript("const u = document.querySelectorAll('.msg.user'); return u[u.length - 1].textContent;")!);

        // While it streams: the reply grows in place, chunk by chunk.
        var seen = new SortedSet<int>();
        var state = await page.WaitForReply(ReplyTimeout, during: s => seen.Add(s.Text.Length));
        Assert.Null(state.Error);
        Assert.Equal(expected, state.Text);
        Assert.True(state.Chunks > 1 && state.Chunks <= completionTokens, $"{state.Chunks} content chunks for {completionTokens} tokens: the reply came in pieces");
        Assert.Matches(@$"^last reply: {completionTokens} tokens, \d+\.\d tokens/s$", state.Speed);
        Assert.True(double.Parse(state.Rate!, System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.Equal("", page.Text("prompt"));

        // A second turn (the request carries the first): at the highest temperature, the demo's random
        // weights usually say more than line breaks, which makes a better screenshot.
        page.Type("temperature", "2");
        page.Type("max-tokens", "64");
        page.Send("Write a haiku about GPUs.");
        var second = await page.WaitForReply(ReplyTimeout);
        Assert.Null(second.Error);
        Assert.Matches(@"^last reply: \d+ tokens, \d+\.\d tokens/s$", second.Speed);
        Assert.Equal(2L, chromium.Driver.ExecuteScript("return document.querySelectorAll('.msg.assistant').length;"));
        Assert.Equal(2L, chromium.Driver.ExecuteScript("return document.querySelectorAll('.msg.user').length;"));
        SaveScreenshot(chromium.Driver);

        // New chat empties the conversation.
        chromium.Driver.FindElement(By.Id("new-chat")).Click();
        Assert.Equal(0L, chromium.Driver.ExecuteScript("return document.querySelectorAll('.msg').length;"));
    }

    [Fact]
    public async Task Stop_ends_a_long_reply_and_frees_its_slot()
    {
        const string message = "Tell me a very long story about a lighthouse.";
        int room = demo.Engine.Advanced.Model.MaxSeq - demo.Engine.EncodeChat([new ChatMessage("user", message)]).Count;
        var page = new Page(chromium.Driver, demo.Server.Address);
        page.Open();
        page.Type("temperature", "0");
        page.Type("max-tokens", room.ToString(System.Globalization.CultureInfo.InvariantCulture));
        page.Send(message);
        await Until(() => page.State().Chunks >= 2 || page.State().Idle, ReplyTimeout, "the reply to start streaming");
        Assert.False(page.State().Idle, "the reply finished before Stop could be pressed; this test needs a prompt whose reply is long");
        var pressed = DateTime.UtcNow;
        chromium.Driver.FindElement(By.Id("stop")).Click();
        await Until(() => page.State().Idle, TimeSpan.FromSeconds(20), "the page to stop streaming after Stop");
        var state = page.State();
        Assert.Null(state.Error);
        Assert.EndsWith("(stopped)", state.Speed);
        Assert.True(state.Chunks < room, $"{state.Chunks} chunks of at most {room}: the reply ran to its end");
        Assert.Contains("stopped", (string)chromium.Driver.ExecuteScript("const a = document.querySelectorAll('.msg.assistant'); return a[a.length - 1].querySelector('.note').textContent;")!);
        // The server saw the client leave and cancelled the request: its KV slot is free again.
        await Until(() => demo.Engine.Advanced.Scheduler.RunningCount == 0, TimeSpan.FromSeconds(60), "the server to cancel the stopped request");
        Assert.True(DateTime.UtcNow - pressed < TimeSpan.FromSeconds(80));
        Assert.True(chromium.Driver.FindElement(By.Id("send")).Enabled);
        Assert.False(chromium.Driver.FindElement(By.Id("stop")).Enabled);
    }

    /// <summary>
    /// The screenshot goes to the test's output folder; with ILGPU_LLAMA_UPDATE_SCREENSHOT=1 also to
    /// docs/chat-page.png (the README's), which a test run otherwise leaves alone (tracked files are not
    /// rewritten by tools/test.sh).
    /// </summary>
    static void SaveScreenshot(ChromeDriver driver)
    {
        var shot = driver.GetScreenshot();
        shot.SaveAsFile(Path.Combine(AppContext.BaseDirectory, "chat-page.png"));
        if (Environment.GetEnvironmentVariable("ILGPU_LLAMA_UPDATE_SCREENSHOT") == "1")
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "IlgpuLlama.sln")))
                dir = dir.Parent;
            Assert.NotNull(dir);
            shot.SaveAsFile(Path.Combine(dir.FullName, "docs", "chat-page.png"));
        }
    }

    static async Task Until(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"timed out after {timeout.TotalSeconds:0} s waiting for {what}");
            await Task.Delay(100);
        }
    }

    /// <summary>What the page shows: its state, the last assistant message, its chunk count, the tokens/s line, an error message.</summary>
    sealed record PageState(bool Idle, string Text, int Chunks, string Speed, string? Rate, string? Error);

    sealed class Page(ChromeDriver driver, Uri address)
    {
        public void Open()
        {
            driver.Navigate().GoToUrl(address);
            Assert.Equal("ilgpu-llama chat", driver.Title);
        }

        public string Text(string id) => (string)driver.ExecuteScript("const e = document.getElementById(arguments[0]); return 'value' in e ? e.value : e.textContent;", id)!;

        public bool Displayed(string id) => driver.FindElement(By.Id(id)).Displayed;

        public void Type(string id, string text)
        {
            var e = driver.FindElement(By.Id(id));
            e.Clear();
            e.SendKeys(text);
        }

        public void Send(string message)
        {
            Type("prompt", message);
            driver.FindElement(By.Id("send")).Click();
        }

        public PageState State()
        {
            var s = (IReadOnlyDictionary<string, object>)driver.ExecuteScript("""
                const a = document.querySelectorAll('.msg.assistant'), last = a[a.length - 1];
                const errors = document.querySelectorAll('.msg.error');
                return {
                  idle: document.body.dataset.state === 'idle',
                  text: last ? (last.dataset.text ?? last.textContent) : '',
                  chunks: last ? last.dataset.chunks : '0',
                  speed: document.getElementById('speed').textContent,
                  rate: document.getElementById('speed').dataset.rate ?? null,
                  error: errors.length ? errors[errors.length - 1].textContent : null,
                };
                """)!;
            return new PageState((bool)s["idle"], (string)s["text"], int.Parse((string)s["chunks"], System.Globalization.CultureInfo.InvariantCulture),
                (string)s["speed"], s["rate"] as string, s["error"] as string);
        }

        /// <summary>Waits until the reply has ended (the page is idle again with a tokens/s line or an error), calling <paramref name="during"/> on each look while it streams.</summary>
        public async Task<PageState> WaitForReply(TimeSpan timeout, Action<PageState>? during = null)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (true)
            {
                var s = State();
                if (s.Idle && (s.Speed.Length > 0 || s.Error is not null))
                    return s;
                if (!s.Idle)
                    during?.Invoke(s);
                if (DateTime.UtcNow > deadline)
                    Assert.Fail($"timed out after {timeout.TotalSeconds:0} s waiting for the reply; the page shows {s}");
                await Task.Delay(100);
            }
        }
    }
}
