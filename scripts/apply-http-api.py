"""Applies a deployed stack's HTTP API routes on the local emulator.

    apply-http-api.py PACKAGED_TEMPLATE STACK

The SAM transform turns HttpApi events into an AWS::ApiGatewayV2::Api whose
routes, integrations and JWT authorizer live in its OpenAPI `Body`; the
emulator (ministack) creates the API and its stage but ignores the Body. This
runs the same SAM transform on the same template, resolves the few intrinsics
the Body uses against the deployed stack, and creates exactly those
authorizers, integrations and routes through the API Gateway v2 API. Prints
`<api id>` on success. Used by scripts/cloud-local only.
"""

import re
import sys

import botocore.session
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    def load(self):
        return {}


def main(template_path, stack_name):
    session = botocore.session.get_session()
    cfn = session.create_client("cloudformation")
    lam = session.create_client("lambda")
    apigw = session.create_client("apigatewayv2")
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    region = session.get_config_variable("region")
    account = stack["StackId"].split(":")[4]
    pseudo = {"AWS::Region": region, "AWS::Partition": "aws", "AWS::AccountId": account,
              "AWS::StackName": stack_name, "AWS::URLSuffix": "amazonaws.com"}

    with open(template_path) as f:
        template = yaml_parse(f.read())
    for name, p in template.get("Parameters", {}).items():
        if name not in params and "Default" in p:
            params[name] = str(p["Default"])  # a parameter left at its default
    processed = transform(template, dict(params), NoManagedPolicies())

    def physical(logical):
        d = cfn.describe_stack_resource(StackName=stack_name, LogicalResourceId=logical)
        return d["StackResourceDetail"]["PhysicalResourceId"]

    def attr(name):
        if name in pseudo:
            return pseudo[name]
        if name in params:
            return params[name]
        if name.endswith(".Arn"):
            return lam.get_function(FunctionName=physical(name[:-4]))["Configuration"]["FunctionArn"]
        return physical(name)

    def resolve(v):
        if isinstance(v, dict) and "Ref" in v:
            return attr(v["Ref"])
        if isinstance(v, dict) and "Fn::Sub" in v:
            text = v["Fn::Sub"]
            extra = {}
            if isinstance(text, list):
                text, extra = text
            return re.sub(r"\$\{([^}]+)\}",
                          lambda m: resolve(extra[m.group(1)]) if m.group(1) in extra else attr(m.group(1)), text)
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    for logical, res in processed["Resources"].items():
        if res["Type"] != "AWS::ApiGatewayV2::Api" or "Body" not in res["Properties"]:
            continue
        api_id = physical(logical)
        body = res["Properties"]["Body"]
        authorizers = {}
        for name, scheme in body.get("components", {}).get("securitySchemes", {}).items():
            a = scheme.get("x-amazon-apigateway-authorizer")
            if not a or a.get("type") != "jwt":
                continue
            jwt = a["jwtConfiguration"]
            made = apigw.create_authorizer(
                ApiId=api_id, Name=name, AuthorizerType="JWT",
                IdentitySource=[a["identitySource"]],
                JwtConfiguration={"Issuer": resolve(jwt["issuer"]), "Audience": resolve(jwt["audience"])})
            authorizers[name] = made["AuthorizerId"]
        for path, item in body.get("paths", {}).items():
            for method, op in item.items():
                integ = op.get("x-amazon-apigateway-integration")
                if not integ:
                    continue
                made = apigw.create_integration(
                    ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationMethod="POST",
                    IntegrationUri=resolve(integ["uri"]),
                    PayloadFormatVersion=integ.get("payloadFormatVersion", "2.0"))
                route = {"ApiId": api_id, "RouteKey": f"{method.upper()} {path}",
                         "Target": f"integrations/{made['IntegrationId']}", "AuthorizationType": "NONE"}
                for requirement in op.get("security", []):
                    for name in requirement:
                        if name in authorizers:
                            route.update(AuthorizationType="JWT", AuthorizerId=authorizers[name])
                apigw.create_route(**route)
        print(api_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
